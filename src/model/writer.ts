import type { CallOptions } from './call-options.ts';
import type { WriterMetadata } from './metadata.ts';
import type { GuestReport } from './report.ts';
import type {
  BackupCompleteRequest,
  FreezeRequest,
  PostSnapshotRequest,
  PostSnapshotResponse,
  PrepareBackupRequest,
  PrepareBackupResponse,
  RestoreRequest,
  SetRequest,
  ThawResponse,
  WriterStatus,
} from './messages.ts';

/**
 * One writer as the coordinator sees it, in-process or behind the wire.
 *
 * Contract:
 * - `identify` and `status` have no side effects and may be called at any time.
 * - The set phases come in the order of docs/design.md's phase table for one set id at a time; a call for another set
 *   while one is in progress fails with `retryable`.
 * - `thaw` is idempotent: thawing a writer that is not frozen (or already thawed itself)
 *   answers `{ selfThawed }` and never fails for that reason.
 * - `abort` is idempotent, may arrive twice, and undoes everything since prepare-backup
 *   (it thaws first if frozen).
 * - `shutdown` ends the set whatever happened; it never fails.
 * - Failures are thrown as `QuiesceError` with the writer's code and phase.
 */
export interface WriterEndpoint {
  identify(options?: CallOptions): Promise<WriterMetadata>;
  status(options?: CallOptions): Promise<WriterStatus>;
  prepareBackup(request: PrepareBackupRequest, options?: CallOptions): Promise<PrepareBackupResponse>;
  prepareSnapshot(request: SetRequest, options?: CallOptions): Promise<void>;
  freeze(request: FreezeRequest, options?: CallOptions): Promise<void>;
  thaw(request: SetRequest, options?: CallOptions): Promise<ThawResponse>;
  postSnapshot(request: PostSnapshotRequest, options?: CallOptions): Promise<PostSnapshotResponse>;
  backupComplete(request: BackupCompleteRequest, options?: CallOptions): Promise<void>;
  abort(request: SetRequest, options?: CallOptions): Promise<void>;
  shutdown(request: SetRequest, options?: CallOptions): Promise<void>;
  preRestore(request: RestoreRequest, options?: CallOptions): Promise<void>;
  postRestore(request: RestoreRequest, options?: CallOptions): Promise<void>;
  /**
   * Tie the writer's watchdog to this requester: while the returned session is open the writer
   * knows its requester is alive; when it closes (or the connection drops) a frozen writer thaws
   * and aborts at once. In-process endpoints return a session whose close does the same.
   */
  openSession(request: SetRequest): Promise<WriterSession>;
  /**
   * Only for a writer that stands for a guest (a recursive set): the guest's nested report as
   * it stands, which the coordinator puts under `guests` in the set's report. No side effects;
   * may be called at any time, after `shutdown` too.
   */
  guestReport?(): GuestReport | null;
  /** Release the connection (not the writer). */
  close(): Promise<void>;
}

export interface WriterSession {
  close(): Promise<void>;
}
