import type {
  BackupCompleteRequest,
  ComponentPlan,
  PostSnapshotRequest,
  PostSnapshotResponse,
  PrepareBackupRequest,
  RestoreRequest,
  WriterMetadata,
} from '../../model/index.ts';

/** What every handler gets: the set id and a signal aborted at the phase's deadline or on abort. */
export interface HandlerContext {
  setId: string;
  signal: AbortSignal;
  /**
   * In freeze only: the runtime's watchdog thaws this long after the freeze. A writer that holds
   * its freeze in another process arms that process with it, so a stopped requester cannot prolong it.
   */
  thawDeadlineMs?: number;
}

/**
 * What `thaw` may answer: the writer's own guard (a process of its own that outlives a stopped
 * requester) had thawed at the deadline before this thaw came, so the freeze did not last until
 * the requester's word. The runtime reports it as a self-thaw, and the set fails honestly.
 */
export interface ThawOutcome {
  selfThawed: boolean;
  /** How long the application was frozen, when the writer knows it better than the runtime. */
  frozenMs?: number;
}

/**
 * A writer is its metadata plus handlers. Only `freeze` and `thaw` are required.
 *
 * The SDK runtime (`createWriterRuntime`) owns the state machine, the watchdog and the
 * idempotence rules; handlers only do the application's work:
 * - `freeze` must hold the application's writes at a transaction boundary and return quickly;
 *   throwing vetoes the set.
 * - `thaw` must release what freeze holds; it is called exactly once after every successful
 *   freeze (by the coordinator, the watchdog or abort) and must not throw for a normal resume;
 *   it answers `{ selfThawed: true }` when its own guard had thawed already (see `ThawOutcome`).
 * - `abort` undoes prepare-backup/prepare-snapshot work; it is called at most once per set,
 *   after thaw when the writer was frozen.
 * - Failures are thrown as `QuiesceError` (any other error becomes `nonretryable`).
 */
export interface WriterDefinition {
  metadata: WriterMetadata | (() => Promise<WriterMetadata>);
  /**
   * What `freeze` reaches. `application` (the default): it holds the application at a transaction
   * boundary. `filesystem`: it only freezes or syncs file systems under applications that take no
   * part, as the QEMU guest agent's fsfreeze does. The runtime says so in every thaw answer
   * (`consistency: 'filesystem'`), and the coordinator records this writer's components that froze
   * and thawed in time at `filesystem`, never `application`.
   *
   * @example
   * const definition: WriterDefinition = { metadata, level: 'filesystem', freeze: fsfreezeAll, thaw: thawAll };
   */
  level?: 'application' | 'filesystem';
  prepareBackup?(request: PrepareBackupRequest, context: HandlerContext): Promise<ComponentPlan[] | void>;
  prepareSnapshot?(context: HandlerContext): Promise<void>;
  freeze(context: HandlerContext): Promise<void>;
  thaw(context: HandlerContext): Promise<void | ThawOutcome>;
  postSnapshot?(request: PostSnapshotRequest, context: HandlerContext): Promise<PostSnapshotResponse | void>;
  backupComplete?(request: BackupCompleteRequest, context: HandlerContext): Promise<void>;
  abort?(context: HandlerContext): Promise<void>;
  /** Always last for a set; release what the set held. */
  shutdown?(context: HandlerContext): Promise<void>;
  preRestore?(request: RestoreRequest, context: HandlerContext): Promise<void>;
  postRestore?(request: RestoreRequest, context: HandlerContext): Promise<void>;
  /** Release resources when the writer process ends. */
  close?(): Promise<void>;
}
