import type { SnapshotLevel } from '../model/index.ts';
// What a caller hands runSnapshotSet: the writers with their policies, the paths, the providers'
// resolver, the deadlines, and the use of the snapshot while the applications run again.
import type {
  BackupType,
  Failure,
  KnownFiles,
  Provider,
  QuiescePolicy,
  QuiesceError,
  SetEvent,
  SetReport,
  WriterEndpoint,
} from '../model/index.ts';
import type { SnapshotView } from './snapshot-view.ts';
import type { CaptureMoment } from './capture-plan.ts';

/** A writer taking part in a set, with its quiesce policy. */
export interface SetWriter {
  name: string;
  endpoint: WriterEndpoint;
  policy: QuiescePolicy;
}

/** The provider chosen for a path, with the consistency its snapshot has on its own. */
export interface ResolvedProvider {
  provider: Provider;
  level: SnapshotLevel;
}

export interface UseOutcome {
  /** Components (writer/component key) whose backup failed; the rest succeeded. */
  failedComponents?: { writer: string; component: string; error: Failure }[];
  /** A failure of the use as a whole (e.g. the command exited non-zero): the set fails. */
  error?: QuiesceError;
  stats?: Partial<SetReport['stats']>;
}

export interface SnapshotSetOptions {
  kind: 'snapshot' | 'backup';
  backupType: BackupType;
  writers: SetWriter[];
  /** Paths taken with no writer: crash or filesystem level. */
  paths: string[];
  stateDir: string;
  stagingDir: string;
  resolveProvider: (path: string) => Promise<ResolvedProvider>;
  /**
   * A provider that commits even when no path resolves to it: a guest's held freeze, which must
   * hold still while its host snapshots the guest's disks whether or not the guest's own writers
   * own any file (a service paused by a script owns none).
   */
  alwaysCommit?: ResolvedProvider;
  /** Every provider of this host, by name: what cleans up after a dead set (dead-set-cleanup.ts). Default: `resolveProvider`'s. */
  providers?: readonly Provider[];
  /** The stamp of the backup a component's incremental/differential builds on. */
  previousStamp?: (writer: string, component: string, type: BackupType) => string | undefined;
  freezeTimeoutMs?: number;
  commitTimeoutMs?: number;
  /** Deadline of every other writer call (identify, prepare, post-snapshot, ...). */
  callTimeoutMs?: number;
  /** Keep the snapshot after the set ends (`--keep`). */
  keep?: boolean;
  /** Wait this long for another set on this host to finish instead of failing with `set-in-progress`. */
  waitForLockMs?: number;
  /** Read the snapshot (run the command, store the backup) while the applications run again. */
  use?: (view: SnapshotView, signal: AbortSignal) => Promise<UseOutcome | void>;
  onEvent?: (event: SetEvent) => void;
  signal?: AbortSignal;
  setId?: string;
  /**
   * Holds the set between prepare-backup and prepare-snapshot until it resolves (a guest's set
   * waits here for its host's prepare-snapshot); it sees the report so far, with every
   * component's negotiated type. A rejection fails the set.
   */
  beforePrepareSnapshot?: (report: () => SetReport) => Promise<void>;
  /**
   * False when the snapshot cannot be read where this set runs (a guest's: the host holds the
   * images), so writers get no post-snapshot and hand out no stamp. Default true.
   */
  postSnapshot?: boolean;
  /**
   * Files the requester already holds (a backup's parent set): providers that copy file by file
   * leave out the plain-path files that still match. Never applied to a writer's component file.
   */
  knownFiles?: KnownFiles;
  /**
   * When copy-based providers take the plain paths (an atomic provider always takes them in its
   * commit): `live`, the default, leaves them to be read in place after thaw (`inconsistent`);
   * `after-thaw` copies them after thaw (`inconsistent`, but fixed for as long as the set is
   * kept); `freeze` (`policy.plainPaths: in-freeze`) copies them inside the freeze, where fsfreeze
   * gives `filesystem` at the cost of a freeze as long as their copy.
   */
  plainPaths?: CaptureMoment;
}
