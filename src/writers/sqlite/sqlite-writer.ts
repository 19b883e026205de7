/**
 * The built-in writer for one SQLite database file.
 *
 * It quiesces by holding the database's write lock (`BEGIN IMMEDIATE` on its own connection):
 * the application's writers wait on their busy timeout instead of failing, readers go on, and
 * the files on disk — the database and its `-wal` or `-journal` — are transaction-consistent
 * while the lock is held. Incremental and differential backups read only the blocks that
 * changed since the previous stamp (see page-stamp.ts).
 *
 * @example
 * const writer = createSqliteWriter({ name: 'shop', path: '/srv/shop/shop.db', stateDir: '/var/lib/quiesce' });
 */
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import {
  QuiesceError,
  WriterMetadataSchema,
  componentKey,
  type BackupCompleteRequest,
  type ComponentPlan,
  type ComponentResult,
  type PostSnapshotRequest,
  type PostSnapshotResponse,
  type PrepareBackupRequest,
  type SnapshotPath,
  type WriterMetadata,
  type WriterUsage,
} from '../../model/index.ts';
import { isErrno } from '../../util/index.ts';
import type { HandlerContext, WriterDefinition } from '../sdk/definition.ts';
import { historyPath, readHistory, writeHistory, type BackupHistory } from './backup-history.ts';
import { changedRanges, comparable, decodeStamp, encodeStamp, stampFile } from './page-stamp.ts';
import { SqliteConnection } from './sqlite-connection.ts';
import { LockHolder } from './lock-holder.ts';
import { negotiateType, type Negotiated } from './type-negotiation.ts';

export interface SqliteWriterOptions {
  /** The writer's name; also the component's logical path. */
  name: string;
  /** The database file. */
  path: string;
  /** Freeze order among writers (default `back-end`: after the applications that use it). */
  usage?: WriterUsage;
  /** `false` turns every requested `full` into `copy` (reason `policy`). Default true. */
  honorFull?: boolean;
  /** Where the writer keeps its backup history (the chain guard's memory). */
  stateDir: string;
  /** The longest freeze waits for the write lock before vetoing with `retryable` (default 10 000 ms). */
  lockTimeoutMs?: number;
}

const SQLITE_BACKUP_TYPES = ['full', 'copy', 'incremental', 'differential'] as const;
const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
/** A freeze called with no thaw deadline (not through the runtime): the holder lets go only when this process dies. */
const NO_DEADLINE_MS = 2 ** 31 - 1;

/** What one set remembers between prepare-backup, post-snapshot and backup-complete. */
interface SetState {
  setId: string;
  /** Selected component name (as the requester spelled it) → its plan. */
  plans: Map<string, Negotiated>;
  /** Component → the stamp post-snapshot handed out. */
  issued: Map<string, string>;
}

/**
 * Where `original` can be read in the snapshot: the entry for the path itself, or for the
 * nearest directory above it (a provider may snapshot a whole directory or volume).
 */
export function snapshotPathOf(original: string, snapshots: readonly SnapshotPath[]): string | undefined {
  let best: { depth: number; path: string } | undefined;
  for (const entry of snapshots) {
    const from = resolve(entry.original);
    const rel = relative(from, original);
    if (rel === '..' || rel.startsWith('../') || isAbsolute(rel)) continue;
    const depth = from.length;
    if (!best || depth > best.depth) best = { depth, path: rel === '' ? entry.snapshot : join(entry.snapshot, rel) };
  }
  return best?.path;
}

export function createSqliteWriter(options: SqliteWriterOptions): WriterDefinition {
  return new SqliteWriter(options);
}

/** The writer's one component (the database file with its -wal and -journal) and its metadata, validated. */
function sqliteMetadata(options: SqliteWriterOptions, dbPath: string): WriterMetadata {
  const file = (path: string) => ({ path, pattern: '*', recursive: false, isLog: false });
  const parsed = WriterMetadataSchema.safeParse({
    name: options.name,
    classId: 'quiesce.sqlite',
    instanceId: dbPath,
    usage: options.usage ?? 'back-end',
    components: [
      {
        name: basename(dbPath),
        logicalPath: options.name,
        kind: 'database' as const,
        selectable: true,
        // SQLite has no log archive: the -wal is part of the database's current state, not a log to back up apart.
        files: [file(dbPath), file(`${dbPath}-wal`), file(`${dbPath}-journal`)],
      },
    ],
    backupTypes: [...SQLITE_BACKUP_TYPES],
    // The application holds the file open: it must be stopped before the file is replaced.
    restoreMethod: 'stop-restore-start',
  });
  if (!parsed.success) {
    throw new QuiesceError(
      'bad-config',
      `sqlite writer ${options.name}: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/** One database's writer: its connection, its history file and what the current set negotiated and issued. */
class SqliteWriter implements WriterDefinition {
  readonly metadata: WriterMetadata;
  readonly #name: string;
  readonly #dbPath: string;
  readonly #honorFull: boolean;
  readonly #stateFile: string;
  readonly #componentName: string;
  readonly #key: string;
  readonly #connection: SqliteConnection;
  readonly #lockTimeoutMs: number;
  /** The child process that holds the write lock of the current set (see lock-holder.ts). */
  #holder: LockHolder | undefined;
  #set: SetState | undefined;

  constructor(options: SqliteWriterOptions) {
    this.#name = options.name;
    this.#dbPath = resolve(options.path);
    this.#honorFull = options.honorFull ?? true;
    this.#stateFile = historyPath(options.stateDir, this.#dbPath);
    this.metadata = sqliteMetadata(options, this.#dbPath);
    this.#componentName = basename(this.#dbPath);
    this.#key = componentKey({ name: this.#componentName, logicalPath: options.name });
    this.#lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    this.#connection = new SqliteConnection({
      writer: options.name,
      dbPath: this.#dbPath,
      component: this.#key,
      lockTimeoutMs: this.#lockTimeoutMs,
    });
  }

  async prepareBackup(request: PrepareBackupRequest, context: HandlerContext): Promise<ComponentPlan[]> {
    const set: SetState = { setId: context.setId, plans: new Map(), issued: new Map() };
    this.#set = set;
    const selected = request.components.find((selection) => this.#isOurs(selection.component));
    if (!selected) return [];
    if (request.backupType === 'log') {
      throw new QuiesceError(
        'nonretryable',
        `sqlite has no log backups (its -wal is not an archive of changes): back up ${this.#dbPath} with type incremental instead`,
        { writer: this.#name, component: selected.component, phase: 'prepare-backup' },
      );
    }
    const history = await readHistory(this.#stateFile, this.#dbPath);
    const negotiated = negotiateType({
      requested: request.backupType,
      previousStamp: selected.previousStamp,
      history,
      honorFull: this.#honorFull,
      path: this.#dbPath,
    });
    set.plans.set(selected.component, negotiated);
    const plan: ComponentPlan = { component: selected.component, actualType: negotiated.actualType };
    if (negotiated.typeReason !== undefined) plan.typeReason = negotiated.typeReason;
    if (negotiated.typeMessage !== undefined) plan.typeMessage = negotiated.typeMessage;
    return [plan];
  }

  async prepareSnapshot(context: HandlerContext): Promise<void> {
    const connection = await this.#connection.open();
    // In rollback mode even reading the journal mode needs a shared lock, which a committing writer may deny.
    const mode = await this.#connection.whenNotBusy(
      () => String(connection.pragma('journal_mode', { simple: true })),
      context,
      'read the journal mode',
    );
    if (mode.toLowerCase() === 'wal') await this.#connection.truncateWal(connection, context);
    // The lock holder starts now, so that the freeze pays nothing for it.
    await this.#startHolder(context);
  }

  /**
   * Takes the write lock in the lock holder, a child process that gives it up at the thaw deadline
   * even when this process is stopped, and at once when this process dies (lock-holder.ts).
   */
  async freeze(context: HandlerContext): Promise<void> {
    await this.#connection.open();
    if (this.#holder?.locked) return;
    const holder = this.#holder ?? (await this.#startHolder(context));
    try {
      await holder.lock(context.thawDeadlineMs ?? NO_DEADLINE_MS, context);
    } catch (error) {
      await this.#endHolder();
      throw error;
    }
  }

  async thaw(_context: HandlerContext): Promise<void> {
    const holder = this.#holder;
    this.#holder = undefined;
    // The lock is given up once the ROLLBACK is answered; the holder's exit is not waited for.
    await holder?.release({ wait: false });
    this.#connection.release();
  }

  async postSnapshot(request: PostSnapshotRequest, context: HandlerContext): Promise<PostSnapshotResponse> {
    const set = this.#set;
    if (!set || set.setId !== context.setId || set.plans.size === 0) return { components: [] };
    const results: ComponentResult[] = [];
    for (const [name, plan] of set.plans) {
      const result = await this.#stampComponent(name, plan, request.snapshots, context.signal);
      set.issued.set(name, result.newStamp);
      results.push(result);
    }
    return { components: results };
  }

  async backupComplete(request: BackupCompleteRequest, context: HandlerContext): Promise<void> {
    let history: BackupHistory | undefined;
    for (const done of request.components) {
      if (!this.#isOurs(done.component) || !done.succeeded) continue;
      // full moves the differential base and the chain; incremental moves the chain;
      // differential, copy (and log) leave the history as it was (docs/design.md, backup types).
      if (done.actualType !== 'full' && done.actualType !== 'incremental') continue;
      const stampId = this.#completedStampId(done.component, done.stamp, context.setId);
      if (stampId === undefined) continue;
      history ??= await readHistory(this.#stateFile, this.#dbPath);
      const at = new Date().toISOString();
      if (done.actualType === 'full') {
        history.baseStampId = stampId;
        history.baseSetId = request.setId;
        history.baseAt = at;
      }
      history.lastStampId = stampId;
      history.lastSetId = request.setId;
      history.lastAt = at;
    }
    if (history) await writeHistory(this.#stateFile, history);
  }

  async abort(_context: HandlerContext): Promise<void> {
    await this.#endHolder();
    this.#connection.release();
    this.#set = undefined;
  }

  async shutdown(_context: HandlerContext): Promise<void> {
    await this.#endHolder();
    this.#connection.release();
    this.#set = undefined;
  }

  async close(): Promise<void> {
    await this.#endHolder();
    this.#connection.close();
  }

  /** A new lock holder for this set (the one of an earlier set ended). */
  async #startHolder(context: HandlerContext): Promise<LockHolder> {
    await this.#endHolder();
    const options = { writer: this.#name, dbPath: this.#dbPath, component: this.#key };
    this.#holder = await LockHolder.start({ ...options, lockTimeoutMs: this.#lockTimeoutMs }, context);
    return this.#holder;
  }

  async #endHolder(): Promise<void> {
    const holder = this.#holder;
    this.#holder = undefined;
    await holder?.release();
  }

  #isOurs(name: string): boolean {
    return name === this.#key || name === this.#componentName;
  }

  /** Stamps the snapshot's copy of the database, and the blocks changed since the plan's previous stamp. */
  async #stampComponent(
    name: string,
    plan: Negotiated,
    snapshots: readonly SnapshotPath[],
    signal: AbortSignal,
  ): Promise<ComponentResult & { newStamp: string }> {
    const dbPath = this.#dbPath;
    const where = { writer: this.#name, component: name, phase: 'post-snapshot' as const };
    const snapshotDb = snapshotPathOf(dbPath, snapshots);
    if (snapshotDb === undefined) {
      throw new QuiesceError(
        'inconsistent-snapshot',
        `the snapshot set has no copy of ${dbPath}: add the volume or directory it lives on to the set`,
        where,
      );
    }
    let stamp;
    try {
      stamp = await stampFile(snapshotDb, { previous: plan.previous, signal });
    } catch (error) {
      if (isErrno(error, 'ENOENT')) {
        throw new QuiesceError('inconsistent-snapshot', `the snapshot has no file ${snapshotDb} for ${dbPath}`, {
          ...where,
          cause: error,
        });
      }
      throw QuiesceError.from(error, 'nonretryable', where);
    }
    const result: ComponentResult & { newStamp: string } = { component: name, newStamp: encodeStamp(stamp) };
    // Only the database file is read in part; its -wal and -journal are always read whole.
    // This holds even when the snapshot's -wal is not empty (no checkpoint can run on a
    // snapshot, and none is needed): the ranges describe the database file's bytes exactly
    // as the snapshot holds them, so the base's file patched with them is byte for byte this
    // snapshot's file, and the -wal stored whole beside it carries the rest. Restoring both
    // gives the database of the snapshot. (Waiting for an empty -wal would make incrementals
    // of a busy WAL database read everything: the -wal of a live database is rarely empty.)
    const partial = plan.actualType === 'incremental' || plan.actualType === 'differential';
    if (partial && plan.previous && comparable(plan.previous, stamp)) {
      result.partialFiles = [{ path: dbPath, size: stamp.size, ranges: changedRanges(plan.previous, stamp) }];
    }
    return result;
  }

  /** The id of the stamp a completed component was taken at: the requester's, or the one this set issued. */
  #completedStampId(component: string, stamp: string | undefined, setId: string): string | undefined {
    const text = stamp ?? (this.#set?.setId === setId ? this.#set.issued.get(component) : undefined);
    if (text === undefined) return undefined;
    try {
      return decodeStamp(text).id;
    } catch {
      return undefined; // Not our stamp: leave the history; the next incremental is then promoted to full.
    }
  }
}
