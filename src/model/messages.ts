/**
 * The requests and answers of one writer's phases: the same shapes in-process and on the wire
 * (proto/quiesce/v1/writer.proto mirrors them). Every message crossing a process boundary is
 * parsed with these schemas.
 */
import { z } from 'zod';
import { BackupTypeSchema, TypeReasonSchema } from './backup-type.ts';
import { FailureSchema } from './failure.ts';
import { WriterMetadataSchema } from './metadata.ts';

export const SetIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._-]+$/, 'a set id is letters, digits, dot, dash, underscore');

/** An opaque stamp a writer hands out after a backup and gets back for the next incremental/differential. */
export const StampSchema = z.string().max(4 * 1024 * 1024);

export const ComponentSelectionSchema = z.object({
  component: z.string().min(1).max(1024),
  /** The stamp of the previous backup this one builds on (incremental: the last of any type; differential: the last full). */
  previousStamp: StampSchema.optional(),
});
export type ComponentSelection = z.infer<typeof ComponentSelectionSchema>;

export const PrepareBackupRequestSchema = z.object({
  setId: SetIdSchema,
  backupType: BackupTypeSchema,
  components: z.array(ComponentSelectionSchema).max(4096),
});
export type PrepareBackupRequest = z.infer<typeof PrepareBackupRequestSchema>;

export const ComponentPlanSchema = z.object({
  component: z.string().min(1).max(1024),
  /** The type this writer will honour for this component. */
  actualType: BackupTypeSchema,
  typeReason: TypeReasonSchema.optional(),
  /** Human-readable explanation of the type change, if any. */
  typeMessage: z.string().max(1024).optional(),
});
export type ComponentPlan = z.infer<typeof ComponentPlanSchema>;

export const PrepareBackupResponseSchema = z.object({
  components: z.array(ComponentPlanSchema).max(4096),
});
export type PrepareBackupResponse = z.infer<typeof PrepareBackupResponseSchema>;

export const SetRequestSchema = z.object({ setId: SetIdSchema });
export type SetRequest = z.infer<typeof SetRequestSchema>;

export const FreezeRequestSchema = z.object({
  setId: SetIdSchema,
  /** The writer's own watchdog thaws after this many milliseconds frozen. */
  thawDeadlineMs: z.number().int().positive().max(3_600_000),
});
export type FreezeRequest = z.infer<typeof FreezeRequestSchema>;

export const ThawResponseSchema = z.object({
  /** True when the writer's watchdog had already thawed it: the freeze window was exceeded. */
  selfThawed: z.boolean(),
  /** How long the writer was frozen, by its own clock. */
  frozenMs: z.number().nonnegative(),
  /**
   * What the freeze reached, when less than an application writer's: `filesystem` for a freeze
   * of file systems alone (the QEMU guest agent, a guest whose data has no application writer),
   * `crash` for a writer that stands for several (a guest) part of which nothing quiesced.
   * Absent means `application`.
   */
  consistency: z.enum(['application', 'filesystem', 'crash', 'inconsistent']).optional(),
});
export type ThawResponse = z.infer<typeof ThawResponseSchema>;

/** Where the provider put the point-in-time copy of one original path. */
export const SnapshotPathSchema = z.object({
  original: z.string().min(1).max(4096),
  snapshot: z.string().min(1).max(4096),
});
export type SnapshotPath = z.infer<typeof SnapshotPathSchema>;

export const PostSnapshotRequestSchema = z.object({
  setId: SetIdSchema,
  snapshots: z.array(SnapshotPathSchema).max(65536),
});
export type PostSnapshotRequest = z.infer<typeof PostSnapshotRequestSchema>;

/** A byte range of a file that changed since the previous stamp. */
export const ByteRangeSchema = z.object({
  offset: z.number().int().nonnegative(),
  length: z.number().int().positive(),
});
export type ByteRange = z.infer<typeof ByteRangeSchema>;

export const PartialFileSchema = z.object({
  /** The original path (not the snapshot path). */
  path: z.string().min(1).max(4096),
  /** The file's size in the snapshot. */
  size: z.number().int().nonnegative(),
  ranges: z.array(ByteRangeSchema).max(1_000_000),
});
export type PartialFile = z.infer<typeof PartialFileSchema>;

export const ComponentResultSchema = z.object({
  component: z.string().min(1).max(1024),
  /** The stamp to hand back next time. */
  newStamp: StampSchema.optional(),
  /** Files of which only these ranges changed since the previous stamp; absent means read whole files. */
  partialFiles: z.array(PartialFileSchema).max(65536).optional(),
});
export type ComponentResult = z.infer<typeof ComponentResultSchema>;

export const PostSnapshotResponseSchema = z.object({
  components: z.array(ComponentResultSchema).max(4096),
});
export type PostSnapshotResponse = z.infer<typeof PostSnapshotResponseSchema>;

export const BackupCompleteRequestSchema = z.object({
  setId: SetIdSchema,
  backupType: BackupTypeSchema,
  components: z
    .array(
      z.object({
        component: z.string().min(1).max(1024),
        actualType: BackupTypeSchema,
        succeeded: z.boolean(),
        /** The stamp this backup recorded for the component. */
        stamp: StampSchema.optional(),
      }),
    )
    .max(4096),
});
export type BackupCompleteRequest = z.infer<typeof BackupCompleteRequestSchema>;

export const RestoreRequestSchema = z.object({
  setId: SetIdSchema,
  components: z.array(z.string().min(1).max(1024)).max(4096),
  /** Where the files are (post-restore) or will be (pre-restore) written. */
  target: z.string().min(1).max(4096),
  /** More restores follow (full, then differential, then logs): do not bring the database online yet. */
  moreFollow: z.boolean().default(false),
});
export type RestoreRequest = z.infer<typeof RestoreRequestSchema>;

export const WriterStatusSchema = z.object({
  metadata: WriterMetadataSchema,
  state: z.string().max(64),
  setId: z.string().max(128).nullable(),
  lastFailure: FailureSchema.nullable(),
});
export type WriterStatus = z.infer<typeof WriterStatusSchema>;
