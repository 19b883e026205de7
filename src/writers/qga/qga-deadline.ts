// The limit of one command to qemu-ga, and the failure of a command that did not finish in it.
import { QuiesceError, type ErrorCode } from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';

export interface Deadline {
  signal: AbortSignal;
  timedOut: () => boolean;
}

/** The caller's signal combined with this call's own limit, and whether that limit is what fired. */
export function deadline(timeoutMs: number, signal: AbortSignal | undefined): Deadline {
  const timeout = AbortSignal.timeout(timeoutMs);
  return {
    signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
    timedOut: () => timeout.aborted && !signal?.aborted,
  };
}

/** A command that did not finish: the agent's silence (`not-responding`) or the caller's cancel. */
export function abortError(limit: Deadline, what: string, timeoutMs: number, socketPath: string): QuiesceError {
  if (limit.timedOut()) {
    return new QuiesceError(
      'not-responding',
      `${what} got no answer within ${timeoutMs} ms: is qemu-ga running and listening on ${socketPath}? (a hung or stopped agent, or another client holding its only connection, looks like this)`,
    );
  }
  const reason: unknown = limit.signal.reason;
  const code: ErrorCode =
    reason instanceof QuiesceError
      ? reason.code
      : reason instanceof Error && reason.name === 'TimeoutError'
        ? 'timeout'
        : 'retryable';
  return new QuiesceError(code, `${what} was cancelled: ${messageOf(reason)}`, { cause: reason });
}
