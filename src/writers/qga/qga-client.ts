/**
 * A client for the QEMU guest agent's protocol (qemu-ga, QEMU's qga/qapi-schema.json) on a Unix
 * socket: one JSON command per line (`{"execute":"guest-…","arguments":{…}}`), one JSON answer
 * per line (`{"return":…}` or `{"error":{"class":…,"desc":…}}`), answered in order.
 *
 * Every connection starts with `guest-sync-delimited`: the request goes out behind a 0xFF byte
 * (the agent drops any half-read JSON of an earlier client), and the answer comes behind a 0xFF
 * byte too, so everything before it (stale answers to an earlier client) is discarded.
 *
 * qemu-ga serves one client at a time: a second connection is accepted by the kernel but not
 * read until the first closes. Hold a connection only as long as a phase needs it.
 *
 * Every failure is a `QuiesceError` that names the socket and says what to do: the agent not
 * answering (`not-responding`), an error answer (`nonretryable`, or `retryable` when the agent
 * is frozen by someone else), garbage or an answer over 1 MiB (`nonretryable`).
 *
 * @example
 * const client = await QgaClient.connect('/run/qemu/shop-vm.qga.sock', { timeoutMs: 5_000 });
 * try {
 *   const frozen = await client.freeze(['/srv'], { signal });
 *   // ... snapshot the guest's disk images ...
 *   await client.thaw();
 * } finally {
 *   await client.close();
 * }
 */
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { QuiesceError } from '../../model/index.ts';
import { isRecord } from '../../util/index.ts';
import {
  CountSchema,
  PingSchema,
  StatusSchema,
  errorAnswerFailure,
  parseAnswer,
  quote,
  type FsfreezeStatus,
} from './qga-answers.ts';
import { abortError, deadline } from './qga-deadline.ts';
import { QgaWire, SENTINEL, openSocket } from './qga-wire.ts';

/** The default limit of each command, connecting and syncing included. */
export const DEFAULT_QGA_TIMEOUT_MS = 10_000;

export interface QgaCallOptions {
  /** Cancels the call; the error is `retryable` (or `timeout` when the reason is a TimeoutError). */
  signal?: AbortSignal;
  /** This call's limit instead of the client's. */
  timeoutMs?: number;
}

export interface QgaConnectOptions {
  /** The limit of each command (default 10 000 ms), connecting and syncing included. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One connection to qemu-ga. Commands are sent one at a time; `close` is idempotent. */
export class QgaClient implements AsyncDisposable {
  readonly socketPath: string;
  readonly #wire: QgaWire;
  readonly #timeoutMs: number;
  /** A command went out whose answer was not read (yet, or ever): re-sync before the next. */
  #unsynced = false;
  /** When the command before this one settled: answers carry no id, only their order matches them. */
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(socketPath: string, wire: QgaWire, timeoutMs: number) {
    this.socketPath = socketPath;
    this.#wire = wire;
    this.#timeoutMs = timeoutMs;
  }

  /** Connects to the agent's socket and syncs with `guest-sync-delimited`. */
  static async connect(socketPath: string, options: QgaConnectOptions = {}): Promise<QgaClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QGA_TIMEOUT_MS;
    const socket = await openSocket(socketPath, deadline(timeoutMs, options.signal), timeoutMs);
    const client = new QgaClient(socketPath, new QgaWire(socketPath, socket), timeoutMs);
    try {
      await client.sync({ signal: options.signal });
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  /**
   * Sends `guest-sync-delimited` with a random id and waits for that id behind a 0xFF byte,
   * discarding everything before it. `connect` does this; call it again to re-sync by hand.
   */
  async sync(options: QgaCallOptions = {}): Promise<void> {
    await this.#serial(() => this.#syncNow(options));
  }

  /** `guest-ping`: the agent is alive and answering. */
  async ping(options: QgaCallOptions = {}): Promise<void> {
    await this.#execute('guest-ping', undefined, PingSchema, options);
  }

  /** `guest-fsfreeze-status`: what the agent believes (it does not ask the kernel). */
  async status(options: QgaCallOptions = {}): Promise<FsfreezeStatus> {
    return this.#execute('guest-fsfreeze-status', undefined, StatusSchema, options);
  }

  /**
   * Freezes the file systems mounted at `mountpoints` (`guest-fsfreeze-freeze-list`), or every
   * freezable file system of the guest when `mountpoints` is undefined (`guest-fsfreeze-freeze`).
   * Answers how many the agent froze: mount points that are not mounted, not freezable or frozen
   * already by someone else are skipped silently, so 0 is possible. On an error answer the agent
   * has thawed whatever it froze.
   */
  async freeze(mountpoints: string[] | undefined, options: QgaCallOptions = {}): Promise<number> {
    return mountpoints === undefined
      ? this.#execute('guest-fsfreeze-freeze', undefined, CountSchema, options)
      : this.#execute('guest-fsfreeze-freeze-list', { mountpoints }, CountSchema, options);
  }

  /**
   * `guest-fsfreeze-thaw`: thaws every frozen file system of the guest (also ones the agent did
   * not freeze) and answers how many.
   */
  async thaw(options: QgaCallOptions = {}): Promise<number> {
    return this.#execute('guest-fsfreeze-thaw', undefined, CountSchema, options);
  }

  /**
   * Writes `guest-fsfreeze-thaw` onto the connection at once, without waiting for anything.
   * The agent runs one connection's commands in order, even the ones still queued when the
   * client has closed, so after a freeze whose answer never came (a timeout, an abort) this thaw
   * runs right behind that freeze whenever the agent gets to it. Answers false when the
   * connection is already gone.
   */
  queueThaw(): boolean {
    if (this.#closed || !this.#wire.writeNow(`${JSON.stringify({ execute: 'guest-fsfreeze-thaw' })}\n`)) return false;
    this.#unsynced = true;
    return true;
  }

  /**
   * A command went out and no answer to it was read (a timeout, a cancel, a closed connection,
   * garbage): the agent may have run it, or may still run it. After a freeze, that is when to
   * `queueThaw`, and to check the agent's status later.
   */
  get answerLost(): boolean {
    return this.#unsynced;
  }

  /** Closes the connection after what was written has reached the kernel; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wire.fail(
      new QuiesceError('not-responding', `the connection to qemu-ga on ${this.socketPath} was closed by this client`),
    );
    await this.#wire.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Runs commands one at a time: answers carry no id, only their order matches them. */
  #serial<T>(body: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(body, body);
    // The next command waits for this one to settle; its failure is its caller's.
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #execute<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    schema: z.ZodType<T>,
    options: QgaCallOptions,
  ): Promise<T> {
    return this.#serial(async () => {
      if (this.#unsynced) await this.#syncNow(options);
      const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
      const limit = deadline(timeoutMs, options.signal);
      // Cancelled before it went out: it is not sent at all.
      if (limit.signal.aborted)
        throw abortError(limit, `${command} to qemu-ga on ${this.socketPath}`, timeoutMs, this.socketPath);
      // Until its answer is read, a command sent may have run or may still run.
      this.#unsynced = true;
      const request = args === undefined ? { execute: command } : { execute: command, arguments: args };
      this.#wire.send(Buffer.from(`${JSON.stringify(request)}\n`));
      const line = await this.#wire.nextLine(command, limit, timeoutMs, this.#abandon);
      this.#unsynced = false;
      const answer = parseAnswer(line);
      if ('garbage' in answer) throw this.#garbage(command, answer.garbage);
      if ('error' in answer) throw errorAnswerFailure(this.socketPath, command, answer.error.class, answer.error.desc);
      const value = schema.safeParse(answer.return);
      if (!value.success) {
        throw this.#garbage(
          command,
          `its answer ${quote(answer.return)} is not what ${command} returns (${value.error.issues[0]?.message ?? 'invalid'})`,
        );
      }
      return value.data;
    });
  }

  async #syncNow(options: QgaCallOptions): Promise<void> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const limit = deadline(timeoutMs, options.signal);
    const id = randomInt(1, 2 ** 47);
    this.#wire.resync();
    this.#wire.send(
      Buffer.concat([
        Buffer.from([SENTINEL]),
        Buffer.from(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`),
      ]),
    );
    for (;;) {
      const line = await this.#wire.nextLine('guest-sync-delimited', limit, timeoutMs, this.#abandon);
      let value: unknown;
      try {
        value = JSON.parse(line.toString('utf8'));
      } catch {
        value = undefined;
      }
      if (isRecord(value) && value.return === id) {
        this.#unsynced = false;
        return;
      }
      // A stale answer behind an earlier client's sentinel: keep looking for ours.
      this.#wire.skipStale();
    }
  }

  /** A read gave up waiting: the answer may still come, and must not be taken for the next command's. */
  readonly #abandon = (): void => {
    this.#unsynced = true;
  };

  #garbage(command: string, what: string): QuiesceError {
    // The stream cannot be trusted to be in step any more.
    this.#unsynced = true;
    return new QuiesceError(
      'nonretryable',
      `qemu-ga on ${this.socketPath} sent garbage for ${command}: ${what}; check that ${this.socketPath} is a qemu-ga channel`,
    );
  }
}
