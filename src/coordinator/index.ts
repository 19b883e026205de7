// The snapshot-set engine: runs the phases of one set across writers and providers,
// enforces deadlines, guarantees thaw, aborts cleanly, and writes the set's event log.
export {
  runSnapshotSet,
  resolveSnapshotPath,
  untilAborted,
  type KeptSet,
  type ResolvedProvider,
  type SetWriter,
  type SnapshotComponent,
  type SnapshotSetOptions,
  type SnapshotView,
  type UseOutcome,
} from './snapshot-set.ts';
export { listKeptSets, releaseKeptSet } from './kept-sets.ts';
export { EventLog } from './event-log.ts';
export { acquireSetLock } from './set-lock.ts';
export { newSetId } from './set-id.ts';
export { readWriterOutcomes, recordWriterOutcomes, type WriterOutcome } from './writer-history.ts';
