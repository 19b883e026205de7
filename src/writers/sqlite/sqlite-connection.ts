// The SQLite writer's own connection to the database: opened on first use, with no busy
// timeout, retried asynchronously while busy; the write lock it takes is what holds the database.
import { access } from 'node:fs/promises';
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { QuiesceError, type ErrorCode } from '../../model/index.ts';
import { isErrno, messageOf } from '../../util/index.ts';
import type { HandlerContext } from '../sdk/definition.ts';

/** How long prepare-snapshot keeps trying to truncate the WAL under load. */
const CHECKPOINT_WAIT_MS = 1000;
/** How long one TRUNCATE checkpoint waits for the write lock and for readers to move on. */
const CHECKPOINT_BUSY_MS = 100;
/** Lock attempts that only yield to the event loop (≈0.2 ms apart) before sleeping 1, 2, 4, 5, 5… ms. */
const IMMEDIATE_ATTEMPTS = 8;
const MAX_SLEEP_MS = 5;

function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

function abortCode(signal: AbortSignal): ErrorCode {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === 'TimeoutError' ? 'timeout' : 'retryable';
}

/** The pause before the next attempt: a yield to the event loop at first, then short sleeps. */
async function pause(attempt: number): Promise<void> {
  if (attempt < IMMEDIATE_ATTEMPTS) await immediate();
  else await sleep(Math.min(MAX_SLEEP_MS, 2 ** (attempt - IMMEDIATE_ATTEMPTS)));
}

export interface SqliteConnectionOptions {
  /** The writer's name, for messages and failures. */
  writer: string;
  /** The database file, resolved. */
  dbPath: string;
  /** The component's key, for failures. */
  component: string;
  /** The longest a step waits for the database while it is busy. */
  lockTimeoutMs: number;
}

/** One connection of the writer's, kept across sets; `close` ends it, and the next use opens it again. */
export class SqliteConnection {
  readonly #options: SqliteConnectionOptions;
  #db: Database.Database | undefined;

  constructor(options: SqliteConnectionOptions) {
    this.#options = options;
  }

  async open(): Promise<Database.Database> {
    if (this.#db?.open) return this.#db;
    const { writer, dbPath, component } = this.#options;
    try {
      await access(dbPath);
    } catch (error) {
      throw new QuiesceError(
        'nonretryable',
        isErrno(error, 'ENOENT')
          ? `sqlite writer ${writer}: the database ${dbPath} does not exist; check the writer's path in the config`
          : `sqlite writer ${writer}: cannot access ${dbPath} (${messageOf(error)}); check the path and this user's permissions`,
        { writer, component, cause: error },
      );
    }
    try {
      // timeout 0: a busy database answers SQLITE_BUSY at once; the freeze loop waits asynchronously.
      const opened = new Database(dbPath, { fileMustExist: true, timeout: 0 });
      opened.pragma('busy_timeout = 0');
      this.#db = opened;
      return opened;
    } catch (error) {
      throw new QuiesceError(
        'nonretryable',
        `sqlite writer ${writer}: cannot open ${dbPath}: ${messageOf(error)}; check the path and that this user may write to its directory`,
        { writer, component, cause: error },
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
  async whenNotBusy<T>(step: () => T, context: HandlerContext, what: string): Promise<T> {
    const { writer, dbPath, component, lockTimeoutMs } = this.#options;
    const signal = AbortSignal.any([context.signal, AbortSignal.timeout(lockTimeoutMs)]);
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) {
        const bySet = context.signal.aborted;
        throw new QuiesceError(
          bySet ? abortCode(context.signal) : 'retryable',
          `sqlite writer ${writer}: could not ${what} of ${dbPath} ` +
            (bySet ? 'before the phase was cancelled' : `within ${lockTimeoutMs} ms`) +
            ': another connection holds a write transaction open. Retry the set, shorten that transaction, or raise lockTimeoutMs',
          { writer, component },
        );
      }
      try {
        return step();
      } catch (error) {
        if (!isBusy(error)) throw QuiesceError.from(error, 'nonretryable', { writer, component });
      }
      await pause(attempt);
    }
  }

  /**
   * Moves committed pages into the database file and cuts the -wal back to nothing, so that the
   * snapshot carries a short -wal. Under constant load the application's own PASSIVE
   * auto-checkpoints never reset the WAL (some connection always reads an old snapshot): we
   * measured it at 470 MB after 15 s of two tight writers, and the freeze then copies all of it.
   * First a PASSIVE checkpoint backfills what it can without blocking anyone; then TRUNCATE,
   * which holds the write lock while it finishes the backfill and waits for the readers to move
   * on: with a short busy timeout it wins within a few ms (0 of 10 attempts without one, 10 of 10
   * with 100 ms, under two tight writers), stalling the writers only for the rest of the
   * backfill. Bounded in time; not truncating is only a missed optimisation.
   */
  async truncateWal(connection: Database.Database, context: HandlerContext): Promise<void> {
    const until = performance.now() + CHECKPOINT_WAIT_MS;
    this.#checkpoint(connection, 'PASSIVE');
    connection.pragma(`busy_timeout = ${CHECKPOINT_BUSY_MS}`);
    try {
      for (let attempt = 0; performance.now() < until && !context.signal.aborted; attempt++) {
        if (this.#checkpoint(connection, 'TRUNCATE')) break;
        await pause(attempt);
      }
    } finally {
      connection.pragma('busy_timeout = 0');
    }
  }

  /** One checkpoint; true when it was not kept from finishing. */
  #checkpoint(connection: Database.Database, mode: 'PASSIVE' | 'TRUNCATE'): boolean {
    try {
      const [result] = connection.pragma(`wal_checkpoint(${mode})`) as { busy: number }[];
      return !result?.busy;
    } catch (error) {
      if (isBusy(error)) return false;
      throw QuiesceError.from(error, 'retryable', {
        writer: this.#options.writer,
        component: this.#options.component,
      });
    }
  }

  /** Gives up the write lock, if held. */
  release(): void {
    if (this.#db?.open && this.#db.inTransaction) this.#db.exec('ROLLBACK');
  }

  close(): void {
    if (!this.#db) return;
    this.release();
    if (this.#db.open) this.#db.close();
    this.#db = undefined;
  }
}
