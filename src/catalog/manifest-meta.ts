import { z } from 'zod';
import {
  BackupTypeSchema,
  ConsistencyLevelSchema,
  SetReportSchema,
  TypeReasonSchema,
  WriterMetadataSchema,
} from '../model/index.ts';

/**
 * What a backup set's manifest records beside its root tree (the repository's envelope keeps
 * this opaque). Every manifest describes complete files, so any set restores on its own; the
 * chain fields say what a later incremental or differential builds on.
 */
export const ComponentRecordSchema = z.object({
  writer: z.string(),
  component: z.string(),
  kind: z.enum(['database', 'files']),
  requestedType: BackupTypeSchema,
  actualType: BackupTypeSchema,
  typeReason: TypeReasonSchema.nullable(),
  consistency: ConsistencyLevelSchema,
  succeeded: z.boolean(),
  /** The writer's stamp after this backup; the next incremental/differential passes it back. */
  stamp: z.string().nullable(),
  /** The set whose stamp this backup was taken against (incremental/differential), null for full/copy. */
  basedOn: z.string().nullable(),
  /** The component's original file paths (as in the writer's metadata). */
  files: z.array(z.string()),
});
export type ComponentRecord = z.infer<typeof ComponentRecordSchema>;

export const BackupMetaSchema = z.object({
  kind: z.literal('backup'),
  hostname: z.string(),
  tags: z.array(z.string()),
  requestedType: BackupTypeSchema,
  status: z.enum(['succeeded', 'partial', 'failed']),
  consistency: ConsistencyLevelSchema,
  /** Original paths captured with no writer. */
  paths: z.array(z.string()),
  components: z.array(ComponentRecordSchema),
  writers: z.array(WriterMetadataSchema),
  report: SetReportSchema,
});
export type BackupMeta = z.infer<typeof BackupMetaSchema>;
