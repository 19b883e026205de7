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
import { connect, type Socket } from 'node:net';
import { z } from 'zod';
import { QuiesceError, type ErrorCode } from '../../model/index.ts';

/** An answer line longer than this is refused (the agent's answers we use are a few bytes). */
export const MAX_ANSWER_BYTES = 1024 * 1024;
/** The default limit of each command, connecting and syncing included. */
export const DEFAULT_QGA_TIMEOUT_MS = 10_000;

const SENTINEL = 0xff;
const NEWLINE = 0x0a;

export type FsfreezeStatus = 'thawed' | 'frozen';

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

const ErrorAnswerSchema = z.object({
  error: z.object({ class: z.string().max(256), desc: z.string().max(65_536) }),
});
const ReturnAnswerSchema = z.object({ return: z.unknown() }).refine((value) => 'return' in value, 'no "return" member');

const CountSchema = z.number().int().nonnegative().max(1_000_000);
const StatusSchema = z.enum(['thawed', 'frozen']);
const PingSchema = z.object({}).passthrough();

/** An `{"error":…}` answer of the agent, kept as the cause of the QuiesceError it becomes. */
export class QgaErrorAnswer extends Error {
  readonly errorClass: string;
  readonly command: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(desc);
    this.name = 'QgaErrorAnswer';
    this.command = command;
    this.errorClass = errorClass;
  }
}

/** Whether a client's error is the agent's own `{"error":…}` answer (the command ran and failed, or was refused). */
export function isErrorAnswer(error: unknown): boolean {
  return error instanceof Error && error.cause instanceof QgaErrorAnswer;
}

interface Waiter {
  resolve(line: Buffer): void;
  reject(error: QuiesceError): void;
}

/** One connection to qemu-ga. Commands are sent one at a time; `close` is idempotent. */
export class QgaClient implements AsyncDisposable {
  readonly socketPath: string;
  private readonly socket: Socket;
  private readonly timeoutMs: number;
  private buffer: Buffer = Buffer.alloc(0);
  private lines: Buffer[] = [];
  private waiter: Waiter | null = null;
  /** Discarding input up to the next 0xFF: before the sync answer, and after a lost answer. */
  private skipping = true;
  /** Why the connection cannot be used any more. */
  private broken: QuiesceError | null = null;
  /** A command went out whose answer was not read (yet, or ever): re-sync before the next. */
  private unsynced = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(socketPath: string, socket: Socket, timeoutMs: number) {
    this.socketPath = socketPath;
    this.socket = socket;
    this.timeoutMs = timeoutMs;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      this.fail(
        new QuiesceError(
          'not-responding',
          `the connection to qemu-ga on ${socketPath} failed (${error.code ?? error.message}); ${this.hint()}`,
          { cause: error },
        ),
      ),
    );
    socket.on('close', () =>
      this.fail(new QuiesceError('not-responding', `qemu-ga on ${socketPath} closed the connection; ${this.hint()}`)),
    );
  }

  /** Connects to the agent's socket and syncs with `guest-sync-delimited`. */
  static async connect(socketPath: string, options: QgaConnectOptions = {}): Promise<QgaClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QGA_TIMEOUT_MS;
    const limit = deadline(timeoutMs, options.signal);
    const { signal } = limit;
    const socket = connect({ path: socketPath });
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void =>
          reject(abortError(limit, `connecting to qemu-ga on ${socketPath}`, timeoutMs, socketPath));
        if (signal.aborted) onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        socket.once('connect', () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
        socket.once('error', (error: NodeJS.ErrnoException) => {
          signal.removeEventListener('abort', onAbort);
          reject(connectError(socketPath, error));
        });
      });
    } catch (error) {
      socket.destroy();
      throw error;
    }
    const client = new QgaClient(socketPath, socket, timeoutMs);
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
    await this.serial(() => this.syncNow(options));
  }

  /** `guest-ping`: the agent is alive and answering. */
  async ping(options: QgaCallOptions = {}): Promise<void> {
    await this.execute('guest-ping', undefined, PingSchema, options);
  }

  /** `guest-fsfreeze-status`: what the agent believes (it does not ask the kernel). */
  async status(options: QgaCallOptions = {}): Promise<FsfreezeStatus> {
    return this.execute('guest-fsfreeze-status', undefined, StatusSchema, options);
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
      ? this.execute('guest-fsfreeze-freeze', undefined, CountSchema, options)
      : this.execute('guest-fsfreeze-freeze-list', { mountpoints }, CountSchema, options);
  }

  /**
   * `guest-fsfreeze-thaw`: thaws every frozen file system of the guest (also ones the agent did
   * not freeze) and answers how many.
   */
  async thaw(options: QgaCallOptions = {}): Promise<number> {
    return this.execute('guest-fsfreeze-thaw', undefined, CountSchema, options);
  }

  /**
   * Writes `guest-fsfreeze-thaw` onto the connection at once, without waiting for anything.
   * The agent runs one connection's commands in order, even the ones still queued when the
   * client has closed, so after a freeze whose answer never came (a timeout, an abort) this thaw
   * runs right behind that freeze whenever the agent gets to it. Answers false when the
   * connection is already gone.
   */
  queueThaw(): boolean {
    if (this.closed || this.socket.destroyed || !this.socket.writable) return false;
    this.socket.write(`${JSON.stringify({ execute: 'guest-fsfreeze-thaw' })}\n`);
    this.unsynced = true;
    return true;
  }

  /**
   * A command went out and no answer to it was read (a timeout, a cancel, a closed connection,
   * garbage): the agent may have run it, or may still run it. After a freeze, that is when to
   * `queueThaw`, and to check the agent's status later.
   */
  get answerLost(): boolean {
    return this.unsynced;
  }

  /** Closes the connection after what was written has reached the kernel; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(
      new QuiesceError('not-responding', `the connection to qemu-ga on ${this.socketPath} was closed by this client`),
    );
    if (!this.socket.destroyed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        this.socket.end(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.socket.destroy();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private hint(): string {
    return `is qemu-ga running and listening on ${this.socketPath}?`;
  }

  /** Runs commands one at a time: answers carry no id, only their order matches them. */
  private serial<T>(body: () => Promise<T>): Promise<T> {
    const run = this.queue.then(body, body);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private execute<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    schema: z.ZodType<T>,
    options: QgaCallOptions,
  ): Promise<T> {
    return this.serial(async () => {
      if (this.unsynced) await this.syncNow(options);
      const timeoutMs = options.timeoutMs ?? this.timeoutMs;
      const limit = deadline(timeoutMs, options.signal);
      // Cancelled before it went out: it is not sent at all.
      if (limit.signal.aborted)
        throw abortError(limit, `${command} to qemu-ga on ${this.socketPath}`, timeoutMs, this.socketPath);
      // Until its answer is read, a command sent may have run or may still run.
      this.unsynced = true;
      const line = await this.roundTrip(
        command,
        args === undefined ? { execute: command } : { execute: command, arguments: args },
        limit,
        timeoutMs,
      );
      this.unsynced = false;
      const answer = this.parse(command, line);
      if ('error' in answer) throw this.errorAnswer(command, answer.error.class, answer.error.desc);
      const value = schema.safeParse(answer.return);
      if (!value.success) {
        throw this.garbage(
          command,
          `its answer ${clip(JSON.stringify(answer.return))} is not what ${command} returns (${value.error.issues[0]?.message ?? 'invalid'})`,
        );
      }
      return value.data;
    });
  }

  private async syncNow(options: QgaCallOptions): Promise<void> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const limit = deadline(timeoutMs, options.signal);
    const id = randomInt(1, 2 ** 47);
    this.skipping = true;
    this.lines = [];
    this.send(
      Buffer.concat([
        Buffer.from([SENTINEL]),
        Buffer.from(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`),
      ]),
    );
    for (;;) {
      const line = await this.nextLine('guest-sync-delimited', limit, timeoutMs);
      let value: unknown;
      try {
        value = JSON.parse(line.toString('utf8'));
      } catch {
        value = undefined;
      }
      if (isRecord(value) && value.return === id) {
        this.unsynced = false;
        return;
      }
      // A stale answer behind an earlier client's sentinel: keep looking for ours.
      this.skipping = true;
    }
  }

  private async roundTrip(command: string, request: unknown, limit: Deadline, timeoutMs: number): Promise<Buffer> {
    this.send(Buffer.from(`${JSON.stringify(request)}\n`));
    return this.nextLine(command, limit, timeoutMs);
  }

  private send(data: Buffer): void {
    if (this.broken) throw this.broken;
    this.socket.write(data);
  }

  private nextLine(command: string, limit: Deadline, timeoutMs: number): Promise<Buffer> {
    const { signal } = limit;
    const ready = this.lines.shift();
    if (ready) return Promise.resolve(ready);
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<Buffer>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiter = null;
        // The answer may still come: it must not be taken for the next command's.
        this.unsynced = true;
        reject(abortError(limit, `${command} to qemu-ga on ${this.socketPath}`, timeoutMs, this.socketPath));
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiter = {
        resolve: (line) => {
          signal.removeEventListener('abort', onAbort);
          resolve(line);
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
    });
  }

  private onData(chunk: Buffer): void {
    let data = chunk;
    if (this.skipping) {
      const at = data.lastIndexOf(SENTINEL);
      if (at < 0) return; // Stale output of an earlier client: dropped.
      this.skipping = false;
      data = data.subarray(at + 1);
      this.buffer = Buffer.alloc(0);
    }
    this.buffer = this.buffer.length === 0 ? data : Buffer.concat([this.buffer, data]);
    for (;;) {
      const end = this.buffer.indexOf(NEWLINE);
      if (end < 0) break;
      let line = this.buffer.subarray(0, end);
      this.buffer = this.buffer.subarray(end + 1);
      // A sentinel inside a line starts a new answer: what came before it is stale.
      const sentinel = line.lastIndexOf(SENTINEL);
      if (sentinel >= 0) line = line.subarray(sentinel + 1);
      if (line.length > MAX_ANSWER_BYTES) return this.tooLong();
      if (line.toString('latin1').trim() === '') continue;
      this.deliver(line);
      if (this.skipping) {
        // syncNow went back to skipping: the rest up to the next sentinel is stale too.
        const at = this.buffer.indexOf(SENTINEL);
        if (at < 0) {
          this.buffer = Buffer.alloc(0);
          return;
        }
        this.skipping = false;
        this.buffer = this.buffer.subarray(at + 1);
      }
    }
    if (this.buffer.length > MAX_ANSWER_BYTES) this.tooLong();
  }

  private deliver(line: Buffer): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      waiter.resolve(line);
    } else {
      this.lines.push(line);
    }
  }

  private tooLong(): void {
    this.fail(
      new QuiesceError(
        'nonretryable',
        `qemu-ga on ${this.socketPath} sent an answer over ${MAX_ANSWER_BYTES} bytes without a line end; this is not an answer to our commands: check that ${this.socketPath} is a qemu-ga channel`,
      ),
    );
    this.socket.destroy();
  }

  private fail(error: QuiesceError): void {
    if (this.broken) return;
    this.broken = error;
    this.buffer = Buffer.alloc(0);
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(error);
  }

  private parse(command: string, line: Buffer): z.infer<typeof ErrorAnswerSchema> | { return: unknown } {
    let value: unknown;
    try {
      value = JSON.parse(line.toString('utf8'));
    } catch {
      throw this.garbage(command, `it answered ${clip(line.toString('utf8'))}, which is not JSON`);
    }
    const error = ErrorAnswerSchema.safeParse(value);
    if (error.success) return error.data;
    const answer = ReturnAnswerSchema.safeParse(value);
    if (answer.success) return { return: answer.data.return };
    throw this.garbage(
      command,
      `it answered ${clip(line.toString('utf8'))}, which is neither {"return":…} nor {"error":…}`,
    );
  }

  private garbage(command: string, what: string): QuiesceError {
    // The stream cannot be trusted to be in step any more.
    this.unsynced = true;
    return new QuiesceError(
      'nonretryable',
      `qemu-ga on ${this.socketPath} sent garbage for ${command}: ${what}; check that ${this.socketPath} is a qemu-ga channel`,
    );
  }

  private errorAnswer(command: string, errorClass: string, desc: string): QuiesceError {
    const cause = new QgaErrorAnswer(command, errorClass, desc);
    const where = `qemu-ga on ${this.socketPath}`;
    let code: ErrorCode = 'nonretryable';
    let message: string;
    if (/frozen state/i.test(desc)) {
      code = 'retryable';
      message = `${where} refused ${command}: ${desc}. The guest's file systems are frozen by another client (another backup, or virsh domfsfreeze); retry when it has thawed them, or thaw them with guest-fsfreeze-thaw if nothing holds them any more`;
    } else if (errorClass === 'CommandNotFound' && /disabled/i.test(desc)) {
      message = `${where} refused ${command}: ${desc}. The command is disabled in the guest: remove it from qemu-ga's --block-rpcs (block-rpcs in /etc/qemu/qemu-ga.conf)`;
    } else if (errorClass === 'CommandNotFound') {
      message = `${where} does not know ${command}: ${desc}. Upgrade qemu-ga in the guest (guest-fsfreeze-freeze-list needs qemu-ga 2.2 or later)`;
    } else if (command.startsWith('guest-fsfreeze-freeze')) {
      message = `${where} could not freeze the guest's file systems (${errorClass}: ${desc}); it thawed whatever it had frozen. Check the guest's system log and its fsfreeze hook, if any`;
    } else {
      message = `${where} failed ${command} (${errorClass}: ${desc})`;
    }
    return new QuiesceError(code, message, { cause });
  }
}

interface Deadline {
  signal: AbortSignal;
  timedOut: () => boolean;
}

/** The caller's signal combined with this call's own limit, and whether that limit is what fired. */
function deadline(timeoutMs: number, signal: AbortSignal | undefined): Deadline {
  const timeout = AbortSignal.timeout(timeoutMs);
  return {
    signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
    timedOut: () => timeout.aborted && !signal?.aborted,
  };
}

/** A command that did not finish: the agent's silence (`not-responding`) or the caller's cancel. */
function abortError(limit: Deadline, what: string, timeoutMs: number, socketPath: string): QuiesceError {
  if (limit.timedOut()) {
    return new QuiesceError(
      'not-responding',
      `${what} got no answer within ${timeoutMs} ms: is qemu-ga running and listening on ${socketPath}? (a hung or stopped agent, or another client holding its only connection, looks like this)`,
    );
  }
  const reason: unknown = limit.signal.reason;
  const why = reason instanceof Error ? reason.message : String(reason);
  const code: ErrorCode =
    reason instanceof QuiesceError
      ? reason.code
      : reason instanceof Error && reason.name === 'TimeoutError'
        ? 'timeout'
        : 'retryable';
  return new QuiesceError(code, `${what} was cancelled: ${why}`, { cause: reason });
}

function connectError(socketPath: string, error: NodeJS.ErrnoException): QuiesceError {
  switch (error.code) {
    case 'ENOENT':
      return new QuiesceError(
        'not-responding',
        `there is no socket at ${socketPath}: is qemu-ga running and listening on ${socketPath}? (for a VM: is the guest agent channel configured and the VM running?)`,
        { cause: error },
      );
    case 'ECONNREFUSED':
      return new QuiesceError(
        'not-responding',
        `nothing listens on ${socketPath} (connection refused; the socket is stale): is qemu-ga running and listening on ${socketPath}?`,
        { cause: error },
      );
    case 'EACCES':
    case 'EPERM':
      return new QuiesceError(
        'nonretryable',
        `permission denied connecting to qemu-ga on ${socketPath}: run as a user that may open the socket, or fix its owner and mode`,
        { cause: error },
      );
    case 'ENOTSOCK':
      return new QuiesceError(
        'nonretryable',
        `${socketPath} is not a socket: point the writer at qemu-ga's Unix socket`,
        { cause: error },
      );
    default:
      return new QuiesceError(
        'not-responding',
        `cannot connect to qemu-ga on ${socketPath} (${error.code ?? error.message}): is qemu-ga running and listening on ${socketPath}?`,
        { cause: error },
      );
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clip(text: string): string {
  return text.length <= 200 ? text : `${text.slice(0, 199)}…`;
}
