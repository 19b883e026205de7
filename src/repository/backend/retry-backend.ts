import type { CallOptions } from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';
import { BackendError, type Backend, type LoadOptions, type ObjectInfo, type ObjectType } from './backend.ts';

/** One retry about to happen, for a reporter to show ("S3 answered 503; retrying in 2 s"). */
export interface RetryEvent {
  operation: 'save' | 'load' | 'stat' | 'list' | 'remove' | 'exists';
  type?: ObjectType;
  name?: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  delayMs: number;
  error: unknown;
}

export interface RetryOptions {
  /** Attempts in all, the first included (default 10). */
  maxAttempts?: number;
  /** The first delay (default 500 ms); each next one doubles, up to `maxDelayMs` (default 30 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Give up once this much time has passed since the first attempt (default 15 min). */
  maxElapsedMs?: number;
  /** Which failures are worth another attempt (default `isTransient`). */
  isTransient?: (error: unknown) => boolean;
  /** Told before each retry; must not throw. */
  onRetry?: (event: RetryEvent) => void;
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
  'UND_ERR_SOCKET',
]);
const TRANSIENT_S3_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
]);

/**
 * The default test for a failure worth retrying: a network error, an HTTP 5xx, a throttling
 * answer (429, SlowDown) or a timeout, found on the error or anywhere along its `cause` chain.
 * Never a missing object, a full disk, an abort or a client mistake (4xx).
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof BackendError && error.kind !== 'other') return false;
  for (let current: unknown = error, depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    if (typeof current !== 'object') return false;
    const { name, code, Code, $metadata, $retryable } = current as {
      name?: unknown;
      code?: unknown;
      Code?: unknown;
      $metadata?: { httpStatusCode?: unknown };
      $retryable?: unknown;
    };
    if (name === 'AbortError') return false;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
    if (typeof Code === 'string' && TRANSIENT_S3_CODES.has(Code)) return true;
    if (typeof name === 'string' && TRANSIENT_S3_CODES.has(name)) return true;
    const status = $metadata?.httpStatusCode;
    if (typeof status === 'number') return status >= 500 || status === 429 || status === 408;
    if ($retryable !== undefined && $retryable !== null) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * A backend that retries another backend's transient failures with capped exponential
 * backoff (restic's `backend/retry`). Permanent failures (not found, no space, a client
 * mistake) and aborts pass straight through; the backoff waits end when `signal` aborts.
 *
 * A retried save writes the same bytes to the same name again, which the contract allows.
 * A listing that fails part-way is started again and skips the names already yielded.
 *
 * @example
 * const backend = new RetryBackend(new S3Backend('s3://b/p'), { onRetry: (e) => reporter.retry(e) });
 */
export class RetryBackend implements Backend {
  readonly location: string;
  private readonly maxAttempts: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxElapsedMs: number;
  private readonly transient: (error: unknown) => boolean;
  private readonly onRetry: ((event: RetryEvent) => void) | undefined;

  constructor(
    readonly inner: Backend,
    options: RetryOptions = {},
  ) {
    this.location = inner.location;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 10);
    this.initialDelayMs = options.initialDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    this.maxElapsedMs = options.maxElapsedMs ?? 15 * 60_000;
    this.transient = options.isTransient ?? isTransient;
    this.onRetry = options.onRetry;
  }

  save(type: ObjectType, name: string, data: Uint8Array, options: CallOptions = {}): Promise<void> {
    return this.retry({ operation: 'save', type, name }, options.signal, () =>
      this.inner.save(type, name, data, options),
    );
  }

  load(type: ObjectType, name: string, options: LoadOptions = {}): Promise<Buffer> {
    return this.retry({ operation: 'load', type, name }, options.signal, () => this.inner.load(type, name, options));
  }

  stat(type: ObjectType, name: string, options: CallOptions = {}): Promise<ObjectInfo> {
    return this.retry({ operation: 'stat', type, name }, options.signal, () => this.inner.stat(type, name, options));
  }

  remove(type: ObjectType, name: string, options: CallOptions = {}): Promise<void> {
    return this.retry({ operation: 'remove', type, name }, options.signal, () =>
      this.inner.remove(type, name, options),
    );
  }

  exists(options: CallOptions = {}): Promise<boolean> {
    return this.retry({ operation: 'exists' }, options.signal, () => this.inner.exists(options));
  }

  async *list(type: ObjectType, options: CallOptions = {}): AsyncGenerator<ObjectInfo> {
    const yielded = new Set<string>();
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const info of this.inner.list(type, options)) {
          if (yielded.has(info.name)) continue;
          yielded.add(info.name);
          yield info;
        }
        return;
      } catch (error) {
        await this.backoff({ operation: 'list', type }, options.signal, error, attempt, started);
      }
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async retry<T>(
    what: Omit<RetryEvent, 'attempt' | 'delayMs' | 'error'>,
    signal: AbortSignal | undefined,
    operation: () => Promise<T>,
  ): Promise<T> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await operation();
      } catch (error) {
        await this.backoff(what, signal, error, attempt, started);
      }
    }
  }

  /** Waits before the next attempt, or throws: the error itself if permanent, or a summary once out of attempts or time. */
  private async backoff(
    what: Omit<RetryEvent, 'attempt' | 'delayMs' | 'error'>,
    signal: AbortSignal | undefined,
    error: unknown,
    attempt: number,
    started: number,
  ): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    if (!this.transient(error)) throw error;
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** (attempt - 1));
    const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    const elapsed = Date.now() - started;
    if (attempt >= this.maxAttempts || elapsed + delayMs > this.maxElapsedMs) {
      const message = messageOf(error);
      throw new BackendError(
        `${message} (gave up after ${attempt} attempt${attempt === 1 ? '' : 's'} over ${formatMs(elapsed)})`,
        {
          cause: error,
          kind: error instanceof BackendError ? error.kind : 'other',
        },
      );
    }
    this.onRetry?.({ ...what, attempt, delayMs, error });
    await sleep(delayMs, signal);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
