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
import { access } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import {
  QuiesceError,
  WriterMetadataSchema,
  componentKey,
  type ComponentPlan,
  type ComponentResult,
  type ErrorCode,
  type SnapshotPath,
  type WriterMetadata,
  type WriterUsage,
} from '../../model/index.ts';
import type { HandlerContext, WriterDefinition } from '../sdk/definition.ts';
import { historyPath, readHistory, writeHistory } from './backup-history.ts';
import { changedRanges, comparable, decodeStamp, encodeStamp, stampFile } from './page-stamp.ts';

/** How long prepare-snapshot keeps trying to truncate the WAL under load. */
const CHECKPOINT_WAIT_MS = 250;
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
/** Lock attempts that only yield to the event loop (≈0.2 ms apart) before sleeping 1, 2, 4, 5, 5… ms. */
const IMMEDIATE_ATTEMPTS = 8;
const MAX_SLEEP_MS = 5;

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

function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

function abortCode(signal: AbortSignal): ErrorCode {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === 'TimeoutError' ? 'timeout' : 'retryable';
}

export function createSqliteWriter(options: SqliteWriterOptions): WriterDefinition {
  const dbPath = resolve(options.path);
  const honorFull = options.honorFull ?? true;
  const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const stateFile = historyPath(options.stateDir, dbPath);
  const file = (path: string) => ({ path, pattern: '*', recursive: false, isLog: false });

  const component = {
    name: basename(dbPath),
    logicalPath: options.name,
    kind: 'database' as const,
    selectable: true,
    // SQLite has no log archive: the -wal is part of the database's current state, not a log to back up apart.
    files: [file(dbPath), file(`${dbPath}-wal`), file(`${dbPath}-journal`)],
  };
  const parsed = WriterMetadataSchema.safeParse({
    name: options.name,
    classId: 'quiesce.sqlite',
    instanceId: dbPath,
    usage: options.usage ?? 'back-end',
    components: [component],
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
  const metadata: WriterMetadata = parsed.data;
  const key = componentKey(component);
  const isOurs = (name: string) => name === key || name === component.name;

  let db: Database.Database | undefined;
  let set: SetState | undefined;

  async function openConnection(): Promise<Database.Database> {
    if (db?.open) return db;
    try {
      await access(dbPath);
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      throw new QuiesceError(
        'nonretryable',
        missing
          ? `sqlite writer ${options.name}: the database ${dbPath} does not exist; check the writer's path in the config`
          : `sqlite writer ${options.name}: cannot access ${dbPath} (${(error as Error).message}); check the path and this user's permissions`,
        { writer: options.name, component: key, cause: error },
      );
    }
    try {
      // timeout 0: a busy database answers SQLITE_BUSY at once; the freeze loop waits asynchronously.
      const opened = new Database(dbPath, { fileMustExist: true, timeout: 0 });
      opened.pragma('busy_timeout = 0');
      db = opened;
      return opened;
    } catch (error) {
      throw new QuiesceError(
        'nonretryable',
        `sqlite writer ${options.name}: cannot open ${dbPath}: ${(error as Error).message}; check the path and that this user may write to its directory`,
        { writer: options.name, component: key, cause: error },
      );
    }
  }

  /**
   * Runs `step` on the writer's connection, retrying on SQLITE_BUSY with short asynchronous
   * pauses. The connection has no busy timeout: better-sqlite3 is synchronous, and SQLite's own
   * busy wait would block this process's event loop (and with it the watchdog that thaws).
   *
   * In WAL mode an attempt costs the application nothing. In rollback-journal mode each attempt
   * holds a shared lock for an instant, which can make a committing application writer sleep in
   * its busy handler; under writers that commit in a tight loop the lock may then take seconds to
   * get (and an application with a short busy timeout may starve). WAL is the mode to back up live.
   */
  async function whenNotBusy<T>(step: () => T, context: HandlerContext, what: string): Promise<T> {
    const signal = AbortSignal.any([context.signal, AbortSignal.timeout(lockTimeoutMs)]);
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) {
        const bySet = context.signal.aborted;
        throw new QuiesceError(
          bySet ? abortCode(context.signal) : 'retryable',
          `sqlite writer ${options.name}: could not ${what} of ${dbPath} ` +
            (bySet ? 'before the phase was cancelled' : `within ${lockTimeoutMs} ms`) +
            ': another connection holds a write transaction open. Retry the set, shorten that transaction, or raise lockTimeoutMs',
          { writer: options.name, component: key },
        );
      }
      try {
        return step();
      } catch (error) {
        if (!isBusy(error)) throw QuiesceError.from(error, 'nonretryable', { writer: options.name, component: key });
      }
      if (attempt < IMMEDIATE_ATTEMPTS) await immediate();
      else await sleep(Math.min(MAX_SLEEP_MS, 2 ** (attempt - IMMEDIATE_ATTEMPTS)));
    }
  }

  function release(): void {
    if (db?.open && db.inTransaction) db.exec('ROLLBACK');
  }

  return {
    metadata,

    async prepareBackup(request, context): Promise<ComponentPlan[]> {
      set = { setId: context.setId, plans: new Map(), issued: new Map() };
      const selected = request.components.find((selection) => isOurs(selection.component));
      if (!selected) return [];
      if (request.backupType === 'log') {
        throw new QuiesceError(
          'nonretryable',
          `sqlite has no log backups (its -wal is not an archive of changes): back up ${dbPath} with type incremental instead`,
          { writer: options.name, component: selected.component, phase: 'prepare-backup' },
        );
      }
      const history = await readHistory(stateFile, dbPath);
      const negotiated = negotiateType({
        requested: request.backupType,
        previousStamp: selected.previousStamp,
        history,
        honorFull,
        path: dbPath,
      });
      set.plans.set(selected.component, negotiated);
      const plan: ComponentPlan = { component: selected.component, actualType: negotiated.actualType };
      if (negotiated.typeReason !== undefined) plan.typeReason = negotiated.typeReason;
      if (negotiated.typeMessage !== undefined) plan.typeMessage = negotiated.typeMessage;
      return [plan];
    },

    async prepareSnapshot(context): Promise<void> {
      const connection = await openConnection();
      // In rollback mode even reading the journal mode needs a shared lock, which a committing writer may deny.
      const mode = await whenNotBusy(
        () => String(connection.pragma('journal_mode', { simple: true })),
        context,
        'read the journal mode',
      );
      if (mode.toLowerCase() !== 'wal') return;
      // Move committed pages into the database file and cut the -wal back to nothing, so that the
      // snapshot carries a short -wal. Under constant load the application's own PASSIVE
      // auto-checkpoints may never reset the WAL: we measured it growing to 800 MB in two seconds
      // under four tight writers on XFS, with no quiesce at all. TRUNCATE needs the write lock and
      // a moment with no reader behind it; SQLite's sleeping busy handler loses that race to busy
      // writers, so we retry without waiting (busy_timeout 0), polling as the freeze does, for a
      // bounded time. Each attempt that cannot finish still backfills what it can. Not truncating
      // is only a missed optimisation.
      const until = performance.now() + CHECKPOINT_WAIT_MS;
      for (let attempt = 0; performance.now() < until && !context.signal.aborted; attempt++) {
        try {
          const [result] = connection.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
          if (!result?.busy) break;
        } catch (error) {
          if (!isBusy(error)) throw QuiesceError.from(error, 'retryable', { writer: options.name, component: key });
        }
        if (attempt < IMMEDIATE_ATTEMPTS) await immediate();
        else await sleep(Math.min(MAX_SLEEP_MS, 2 ** (attempt - IMMEDIATE_ATTEMPTS)));
      }
    },

    async freeze(context): Promise<void> {
      const connection = await openConnection();
      if (connection.inTransaction) return;
      await whenNotBusy(() => connection.exec('BEGIN IMMEDIATE'), context, 'take the write lock');
    },

    async thaw(_context): Promise<void> {
      release();
    },

    async postSnapshot(request, context) {
      if (!set || set.setId !== context.setId || set.plans.size === 0) return { components: [] };
      const results: ComponentResult[] = [];
      for (const [name, plan] of set.plans) {
        const snapshotDb = snapshotPathOf(dbPath, request.snapshots);
        if (snapshotDb === undefined) {
          throw new QuiesceError(
            'inconsistent-snapshot',
            `the snapshot set has no copy of ${dbPath}: add the volume or directory it lives on to the set`,
            { writer: options.name, component: name, phase: 'post-snapshot' },
          );
        }
        let stamp;
        try {
          stamp = await stampFile(snapshotDb, { previous: plan.previous, signal: context.signal });
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
            throw new QuiesceError('inconsistent-snapshot', `the snapshot has no file ${snapshotDb} for ${dbPath}`, {
              writer: options.name,
              component: name,
              phase: 'post-snapshot',
              cause: error,
            });
          }
          throw QuiesceError.from(error, 'nonretryable', {
            writer: options.name,
            component: name,
            phase: 'post-snapshot',
          });
        }
        const newStamp = encodeStamp(stamp);
        const result: ComponentResult = { component: name, newStamp };
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
        set.issued.set(name, newStamp);
        results.push(result);
      }
      return { components: results };
    },

    async backupComplete(request, context): Promise<void> {
      let history: Awaited<ReturnType<typeof readHistory>> | undefined;
      for (const done of request.components) {
        if (!isOurs(done.component) || !done.succeeded) continue;
        // full moves the differential base and the chain; incremental moves the chain;
        // differential, copy (and log) leave the history as it was (MODEL.md, backup types).
        if (done.actualType !== 'full' && done.actualType !== 'incremental') continue;
        const text = done.stamp ?? (set?.setId === context.setId ? set.issued.get(done.component) : undefined);
        if (text === undefined) continue;
        let stampId: string;
        try {
          stampId = decodeStamp(text).id;
        } catch {
          continue; // Not our stamp: leave the history; the next incremental is then promoted to full.
        }
        history ??= await readHistory(stateFile, dbPath);
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
      if (history) await writeHistory(stateFile, history);
    },

    async abort(_context): Promise<void> {
      release();
      set = undefined;
    },

    async shutdown(_context): Promise<void> {
      release();
      set = undefined;
    },

    async close(): Promise<void> {
      if (!db) return;
      release();
      if (db.open) db.close();
      db = undefined;
    },
  };
}
