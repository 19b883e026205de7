import { z } from 'zod';
import { BackupTypeSchema, TypeReasonSchema, type BackupType } from './backup-type.ts';
import { ConsistencyLevelSchema } from './consistency.ts';
import { FailureSchema, type Failure } from './failure.ts';

export const SET_STATUSES = ['succeeded', 'partial', 'failed'] as const;
export type SetStatus = (typeof SET_STATUSES)[number];

export const ComponentReportSchema = z.object({
  writer: z.string(),
  component: z.string(),
  requestedType: BackupTypeSchema,
  actualType: BackupTypeSchema,
  typeReason: TypeReasonSchema.nullable(),
  consistency: ConsistencyLevelSchema,
  status: z.enum(SET_STATUSES),
  error: FailureSchema.nullable(),
});
export type ComponentReport = z.infer<typeof ComponentReportSchema>;

export const WriterReportSchema = z.object({
  name: z.string(),
  classId: z.string(),
  instanceId: z.string(),
  state: z.string(),
  consistency: ConsistencyLevelSchema,
  /** Freeze to thaw, as the coordinator measured it; null if never frozen. */
  freezeWindowMs: z.number().nullable(),
  error: FailureSchema.nullable(),
});
export type WriterReport = z.infer<typeof WriterReportSchema>;

export const SnapshotReportSchema = z.object({
  provider: z.string(),
  original: z.string(),
  snapshot: z.string(),
  consistency: ConsistencyLevelSchema,
});
export type SnapshotReport = z.infer<typeof SnapshotReportSchema>;

/** How a guest was quiesced: by a quiesce agent, by the QEMU guest agent, or not at all. */
export const GUEST_AGENT_KINDS = ['quiesce', 'qga', 'none'] as const;
export type GuestAgentKind = (typeof GUEST_AGENT_KINDS)[number];

/**
 * One guest of a recursive set, nested in its host's report: the guest's own writers and
 * components, its level, and the failure that lowered it. Times are on the host's clock.
 */
export type GuestReport = {
  name: string;
  agent: GuestAgentKind;
  consistency: z.infer<typeof ConsistencyLevelSchema>;
  status: SetStatus;
  error: z.infer<typeof FailureSchema> | null;
  /** What the operator should know that is not a failure (e.g. "no agent: taken crash-consistent"). */
  message: string | null;
  /** When the guest was frozen, in milliseconds after the host's set started (a writer hands the coordinator epoch milliseconds, which it rebases); null if never. */
  frozenAtMs: number | null;
  /** From the guest's freeze to its thaw, by the guest's clock; null if never frozen. */
  freezeWindowMs: number | null;
  components: ComponentReport[];
  writers: WriterReport[];
  guests: GuestReport[];
};
export const GuestReportSchema: z.ZodType<GuestReport> = z.lazy(() =>
  z.object({
    name: z.string().max(256),
    agent: z.enum(GUEST_AGENT_KINDS),
    consistency: ConsistencyLevelSchema,
    status: z.enum(SET_STATUSES),
    error: FailureSchema.nullable(),
    message: z.string().max(4096).nullable(),
    frozenAtMs: z.number().nullable(),
    freezeWindowMs: z.number().nullable(),
    components: z.array(ComponentReportSchema).max(4096),
    writers: z.array(WriterReportSchema).max(4096),
    guests: z.array(GuestReportSchema).max(1024),
  }),
);

export const SetReportSchema = z.object({
  id: z.string(),
  kind: z.enum(['snapshot', 'backup']),
  requestedType: BackupTypeSchema,
  status: z.enum(SET_STATUSES),
  consistency: ConsistencyLevelSchema,
  startedAt: z.string(),
  finishedAt: z.string(),
  /** From the first writer's freeze to the last writer's thaw; null if nothing was frozen. */
  freezeWindowMs: z.number().nullable(),
  commitMs: z.number().nullable(),
  error: FailureSchema.nullable(),
  /** Errors after thaw and a successful commit: they do not lower consistency. */
  benign: z.array(FailureSchema),
  writers: z.array(WriterReportSchema),
  components: z.array(ComponentReportSchema),
  snapshots: z.array(SnapshotReportSchema),
  guests: z.array(GuestReportSchema),
  kept: z.boolean(),
  stats: z.object({
    files: z.number(),
    bytesRead: z.number(),
    bytesAdded: z.number(),
    /** The whole set, from its start to its report. */
    durationMs: z.number(),
    /** The archive's own part of it: reading the snapshot into the repository (backups only). */
    archiveMs: z.number().optional(),
    /** Files read in place (no snapshot holds them) that changed or vanished while read: stored as read, or left out. */
    changedWhileRead: z.number().optional(),
  }),
});
export type SetReport = z.infer<typeof SetReportSchema>;

/** The report of a set refused before it began (a held set lock, a bad state dir): nothing taken, nothing kept. */
export function failedSetReport(
  set: { id: string; kind: SetReport['kind']; requestedType: BackupType },
  error: Failure,
): SetReport {
  const now = new Date().toISOString();
  return {
    ...set,
    status: 'failed',
    consistency: 'none',
    startedAt: now,
    finishedAt: now,
    freezeWindowMs: null,
    commitMs: null,
    error,
    benign: [],
    writers: [],
    components: [],
    snapshots: [],
    guests: [],
    kept: false,
    stats: { files: 0, bytesRead: 0, bytesAdded: 0, durationMs: 0 },
  };
}

/** One line of a set's event log (JSON lines). */
export const SetEventSchema = z.object({
  setId: z.string(),
  at: z.string(),
  /** Milliseconds since the set started, on the coordinator's monotonic clock. */
  t: z.number(),
  phase: z.string(),
  writer: z.string().nullable(),
  provider: z.string().nullable(),
  event: z.enum(['start', 'end', 'fail', 'info']),
  durationMs: z.number().nullable(),
  result: z.string().nullable(),
  error: FailureSchema.nullable(),
});
export type SetEvent = z.infer<typeof SetEventSchema>;
