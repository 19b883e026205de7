// The snapshot-set engine: runs the phases of one set across writers and providers,
// enforces deadlines, guarantees thaw, aborts cleanly, and writes the set's event log.
export { runSnapshotSet } from './snapshot-set.ts';
export type { ResolvedProvider, SetWriter, SnapshotSetOptions, UseOutcome } from './set-options.ts';
export { resolveSnapshotPath, type SnapshotComponent, type SnapshotView } from './snapshot-view.ts';
export { listKeptSets, releaseKeptSet, type KeptSet } from './kept-sets.ts';
export { readLastCleanup, type CleanedSet, type DeadSetCleanup } from './dead-set-cleanup.ts';
export { EventLog } from './event-log.ts';
export { acquireSetLock } from './set-lock.ts';
export { newSetId } from './set-id.ts';
export { readWriterOutcomes, recordWriterOutcomes, type WriterOutcome } from './writer-history.ts';
