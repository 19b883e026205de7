// The SQLite writer's write lock held by a child process, so that a stopped or dead requester
// cannot prolong the freeze: a small node program on the same SQLite library, in its own session.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import type { Readable, Writable } from 'node:stream';
import { QuiesceError, type ErrorCode } from '../../model/index.ts';
import type { HandlerContext } from '../sdk/definition.ts';

/**
 * The holder: one connection with no busy timeout, driven line by line on stdin. `lock <ms>` arms
 * the deadline (`<ms>` later it exits, whatever we do) and takes the write lock, retrying while
 * the database is busy as the in-process freeze did (yields, then sleeps of 1 to 5 ms), so that a
 * freeze costs one exchange; `unlock` stops trying and rolls back; end-of-file (we died) or the
 * deadline (we are stopped) ends it, and the kernel drops its POSIX locks with it. It answers one
 * line per command. Its own session keeps it out of a terminal's or a process group's signals,
 * as fsfreeze's guardian is.
 *
 * argv: the better-sqlite3 module, the database.
 */
const HOLDER_PROGRAM = `'use strict';
const Database = require(process.argv[1]);
const quit = () => process.exit(0);
process.stdout.on('error', quit);
let db;
try {
  db = new Database(process.argv[2], { fileMustExist: true, timeout: 0 });
  db.pragma('busy_timeout = 0');
} catch (error) {
  process.stdout.write('error ' + String(error && error.message).replace(/\\n/g, ' ') + '\\n');
  process.exit(1);
}
let deadline = null;
let trying = null;
const answer = (line) => process.stdout.write(line + '\\n');
const attempt = (n) => {
  try {
    if (!db.inTransaction) db.exec('BEGIN IMMEDIATE');
    trying = null;
    answer('locked');
  } catch (error) {
    const code = String(error && error.code);
    if (!code.startsWith('SQLITE_BUSY') && !code.startsWith('SQLITE_LOCKED')) {
      trying = null;
      answer('error ' + String(error && error.message).replace(/\\n/g, ' '));
      return;
    }
    const next = () => attempt(n + 1);
    trying = n < 8 ? setImmediate(next) : setTimeout(next, Math.min(5, 2 ** (n - 8)));
  }
};
const stop = () => {
  if (trying === null) return;
  clearImmediate(trying);
  clearTimeout(trying);
  trying = null;
};
const handle = (line) => {
  const [command, argument] = line.split(' ');
  if (command === 'lock') {
    if (deadline === null) deadline = setTimeout(quit, Number(argument));
    stop();
    attempt(0);
  } else if (command === 'unlock') {
    stop();
    if (db.inTransaction) db.exec('ROLLBACK');
    if (deadline !== null) clearTimeout(deadline);
    deadline = null;
    answer('unlocked');
  } else answer('ready');
};
let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  for (let at = buffer.indexOf('\\n'); at >= 0; at = buffer.indexOf('\\n')) {
    const line = buffer.slice(0, at);
    buffer = buffer.slice(at + 1);
    handle(line);
  }
});
process.stdin.on('end', quit);
`;

/** How long a thaw waits for the ROLLBACK's answer before it ends the holder the hard way. */
const ROLLBACK_WAIT_MS = 2000;
/**
 * The holder lets go this long after the thaw deadline: the runtime's watchdog thaws first while
 * this process runs (and says it thawed itself); the holder's own deadline is for a stopped one.
 */
const DEADLINE_GRACE_MS = 250;
/** How long prepare-snapshot waits for the holder to start. */
const START_WAIT_MS = 30_000;

function abortCode(signal: AbortSignal): ErrorCode {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === 'TimeoutError' ? 'timeout' : 'retryable';
}

export interface LockHolderOptions {
  writer: string;
  dbPath: string;
  component: string;
  /** The longest the freeze waits for the write lock. */
  lockTimeoutMs: number;
}

/**
 * One holder for one set: `start` at prepare-snapshot, `lock` at freeze (with the thaw deadline),
 * `release` at thaw. Killing or stopping this process releases the lock by the deadline.
 */
export class LockHolder {
  readonly #options: LockHolderOptions;
  readonly #child: ChildProcess;
  readonly #input: Writable;
  readonly #exited: Promise<void>;
  #output = '';
  #gone = false;
  #locked = false;
  #waiters: (() => void)[] = [];

  private constructor(options: LockHolderOptions) {
    this.#options = options;
    const module = createRequire(import.meta.url).resolve('better-sqlite3');
    this.#child = spawn(process.execPath, ['-e', HOLDER_PROGRAM, module, options.dbPath], {
      detached: true,
      cwd: '/',
      // No NODE_OPTIONS: the holder is plain JavaScript and starts faster without a loader.
      env: { LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    this.#input = this.#child.stdin!;
    this.#input.on('error', () => {});
    (this.#child.stdout as Readable).setEncoding('utf8').on('data', (chunk: string) => {
      this.#output += chunk;
      this.#wake();
    });
    this.#exited = new Promise((resolve) => {
      const done = () => {
        this.#gone = true;
        this.#locked = false;
        this.#wake();
        resolve();
      };
      this.#child.once('error', done);
      this.#child.once('close', done);
    });
  }

  /** Starts the holder and waits until it has opened the database. */
  static async start(options: LockHolderOptions, context: HandlerContext): Promise<LockHolder> {
    const holder = new LockHolder(options);
    try {
      const answer = await holder.#ask('ping', AbortSignal.any([context.signal, AbortSignal.timeout(START_WAIT_MS)]));
      if (answer !== 'ready') throw holder.#failure(answer);
    } catch (error) {
      await holder.release();
      throw error;
    }
    return holder;
  }

  get locked(): boolean {
    return this.#locked;
  }

  /**
   * Takes the write lock (the holder retries while the database is busy), and arms the holder's
   * deadline: `thawDeadlineMs` (+ a grace) later it lets go whatever happens to us.
   */
  async lock(thawDeadlineMs: number, context: HandlerContext): Promise<void> {
    const { writer, dbPath, component, lockTimeoutMs } = this.#options;
    const signal = AbortSignal.any([context.signal, AbortSignal.timeout(lockTimeoutMs)]);
    // setTimeout in the holder takes at most 2³¹ − 1 ms.
    const deadline = Math.min(2 ** 31 - 1, Math.max(1, Math.round(thawDeadlineMs)) + DEADLINE_GRACE_MS);
    const answer = await this.#ask(`lock ${deadline}`, signal).catch((error: unknown) => {
      if (!signal.aborted) throw error;
      const bySet = context.signal.aborted;
      throw new QuiesceError(
        bySet ? abortCode(context.signal) : 'retryable',
        `sqlite writer ${writer}: could not take the write lock of ${dbPath} ` +
          (bySet ? 'before the phase was cancelled' : `within ${lockTimeoutMs} ms`) +
          ': another connection holds a write transaction open. Retry the set, shorten that transaction, or raise lockTimeoutMs',
        { writer, component },
      );
    });
    if (answer !== 'locked') throw this.#failure(answer);
    this.#locked = true;
  }

  /**
   * Gives up the lock (the ROLLBACK answered: the other connections may write again) and ends the
   * holder; `wait` waits for it to exit too. When no answer comes, the holder's exit drops the lock.
   */
  async release(options: { wait: boolean } = { wait: true }): Promise<void> {
    if (this.#locked && !this.#gone) {
      this.#locked = false;
      const answer = await this.#ask('unlock', AbortSignal.timeout(ROLLBACK_WAIT_MS)).catch(() => null);
      if (answer !== 'unlocked') this.#child.kill('SIGKILL');
    }
    this.#locked = false;
    if (!this.#gone) this.#input.end();
    if (options.wait) await this.#exited;
  }

  /** Sends one command; answers the holder's one line. */
  async #ask(command: string, signal: AbortSignal): Promise<string> {
    if (this.#gone) throw this.#failure(null);
    this.#input.write(`${command}\n`);
    for (;;) {
      const at = this.#output.indexOf('\n');
      if (at >= 0) {
        const line = this.#output.slice(0, at);
        this.#output = this.#output.slice(at + 1);
        return line;
      }
      if (this.#gone) throw this.#failure(null);
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        signal.addEventListener('abort', onAbort, { once: true });
        this.#waiters.push(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  /** The failure of an `error …` answer, or of a holder that ended (null). */
  #failure(answer: string | null): QuiesceError {
    const { writer, dbPath, component } = this.#options;
    if (answer !== null) {
      return new QuiesceError(
        'nonretryable',
        `sqlite writer ${writer}: could not lock ${dbPath}: ${answer.replace(/^error /, '')}`,
        { writer, component },
      );
    }
    return new QuiesceError(
      'retryable',
      `sqlite writer ${writer}: the process holding the lock of ${dbPath} ended before the thaw; retry the set`,
      { writer, component },
    );
  }
}
