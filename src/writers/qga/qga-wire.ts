// One socket to qemu-ga: opening it, writing requests, and reading answer lines, where a 0xFF
// byte starts afresh (everything before it is a stale answer to an earlier client).
import { connect, type Socket } from 'node:net';
import { QuiesceError } from '../../model/index.ts';
import { abortError, type Deadline } from './qga-deadline.ts';

/** An answer line longer than this is refused (the agent's answers we use are a few bytes). */
export const MAX_ANSWER_BYTES = 1024 * 1024;

export const SENTINEL = 0xff;
const NEWLINE = 0x0a;

interface Waiter {
  resolve(line: Buffer): void;
  reject(error: QuiesceError): void;
}

/** Connects to the agent's socket within the deadline; every failure says what to check. */
export async function openSocket(socketPath: string, limit: Deadline, timeoutMs: number): Promise<Socket> {
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
  return socket;
}

/**
 * The connected socket, read as answer lines. Input is discarded up to the next 0xFF while
 * `skipping` (before the sync answer, and after a lost answer); a line over `MAX_ANSWER_BYTES`,
 * an error or the socket's close breaks the wire for good, failing the read in progress.
 */
export class QgaWire {
  readonly #socketPath: string;
  readonly #socket: Socket;
  #buffer: Buffer = Buffer.alloc(0);
  #lines: Buffer[] = [];
  #waiter: Waiter | null = null;
  #skipping = true;
  /** Why the connection cannot be used any more. */
  #broken: QuiesceError | null = null;

  constructor(socketPath: string, socket: Socket) {
    this.#socketPath = socketPath;
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      this.fail(
        new QuiesceError(
          'not-responding',
          `the connection to qemu-ga on ${socketPath} failed (${error.code ?? error.message}); ${this.#hint()}`,
          { cause: error },
        ),
      ),
    );
    socket.on('close', () =>
      this.fail(new QuiesceError('not-responding', `qemu-ga on ${socketPath} closed the connection; ${this.#hint()}`)),
    );
  }

  /** Drops every line read and skips to the next 0xFF: a sync request is about to go out. */
  resync(): void {
    this.#skipping = true;
    this.#lines = [];
  }

  /** Skips to the next 0xFF again: the line just read was a stale answer. */
  skipStale(): void {
    this.#skipping = true;
  }

  send(data: Buffer): void {
    if (this.#broken) throw this.#broken;
    this.#socket.write(data);
  }

  /** Writes `text` at once, broken or not; false when the socket can take nothing any more. */
  writeNow(text: string): boolean {
    if (this.#socket.destroyed || !this.#socket.writable) return false;
    this.#socket.write(text);
    return true;
  }

  /**
   * The next answer line. When the deadline passes first, `onAbandon` runs before the rejection:
   * the answer may still come, and must not be taken for the next command's.
   */
  nextLine(command: string, limit: Deadline, timeoutMs: number, onAbandon: () => void): Promise<Buffer> {
    const { signal } = limit;
    const ready = this.#lines.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#broken) return Promise.reject(this.#broken);
    return new Promise<Buffer>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiter = null;
        onAbandon();
        reject(abortError(limit, `${command} to qemu-ga on ${this.#socketPath}`, timeoutMs, this.#socketPath));
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiter = {
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

  /** Breaks the wire with `error`: the read in progress fails with it, and so does every later one. */
  fail(error: QuiesceError): void {
    if (this.#broken) return;
    this.#broken = error;
    this.#buffer = Buffer.alloc(0);
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(error);
  }

  /** Ends the socket once what was written has reached the kernel (waiting at most a second). */
  async end(): Promise<void> {
    if (this.#socket.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1_000);
      this.#socket.end(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#socket.destroy();
  }

  #hint(): string {
    return `is qemu-ga running and listening on ${this.#socketPath}?`;
  }

  #onData(chunk: Buffer): void {
    let data = chunk;
    if (this.#skipping) {
      const at = data.lastIndexOf(SENTINEL);
      if (at < 0) return; // Stale output of an earlier client: dropped.
      this.#skipping = false;
      data = data.subarray(at + 1);
      this.#buffer = Buffer.alloc(0);
    }
    this.#buffer = this.#buffer.length === 0 ? data : Buffer.concat([this.#buffer, data]);
    for (;;) {
      const end = this.#buffer.indexOf(NEWLINE);
      if (end < 0) break;
      let line = this.#buffer.subarray(0, end);
      this.#buffer = this.#buffer.subarray(end + 1);
      // A sentinel inside a line starts a new answer: what came before it is stale.
      const sentinel = line.lastIndexOf(SENTINEL);
      if (sentinel >= 0) line = line.subarray(sentinel + 1);
      if (line.length > MAX_ANSWER_BYTES) return this.#tooLong();
      if (line.toString('latin1').trim() === '') continue;
      this.#deliver(line);
      if (this.#skipping && !this.#skipToSentinel()) return;
    }
    if (this.#buffer.length > MAX_ANSWER_BYTES) this.#tooLong();
  }

  /** The sync went back to skipping: drops what was read up to the next sentinel; false when there is none yet. */
  #skipToSentinel(): boolean {
    const at = this.#buffer.indexOf(SENTINEL);
    if (at < 0) {
      this.#buffer = Buffer.alloc(0);
      return false;
    }
    this.#skipping = false;
    this.#buffer = this.#buffer.subarray(at + 1);
    return true;
  }

  #deliver(line: Buffer): void {
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = null;
      waiter.resolve(line);
    } else {
      this.#lines.push(line);
    }
  }

  #tooLong(): void {
    this.fail(
      new QuiesceError(
        'nonretryable',
        `qemu-ga on ${this.#socketPath} sent an answer over ${MAX_ANSWER_BYTES} bytes without a line end; this is not an answer to our commands: check that ${this.#socketPath} is a qemu-ga channel`,
      ),
    );
    this.#socket.destroy();
  }
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
