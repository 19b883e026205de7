import { QuiesceError } from '../model/index.ts';
import { messageOf } from '../util/index.ts';

/** The one error providers throw: code `provider-failed`, with a message that says what to do. */
export function providerFailed(message: string, cause?: unknown): QuiesceError {
  return new QuiesceError('provider-failed', message, cause === undefined ? {} : { cause });
}

/**
 * Any thrown value as a provider failure: `doing` says what failed and `hint` what to do.
 * A provider failure passes unchanged.
 */
export function asProviderFailure(error: unknown, doing: string, hint = ''): QuiesceError {
  if (error instanceof QuiesceError && error.code === 'provider-failed') return error;
  return providerFailed(`${doing} failed: ${messageOf(error)}.${hint === '' ? '' : ` ${hint}`}`, error);
}

/** Throws a provider failure naming the abort reason when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, doing: string): void {
  if (signal?.aborted) throw abortedFailure(signal, doing);
}

export function abortedFailure(signal: AbortSignal, doing: string): QuiesceError {
  const reason: unknown = signal.reason;
  const why = reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : 'aborted';
  return providerFailed(
    `${doing} was cancelled (${why}); nothing was kept. Raise the commit deadline or snapshot less data if this was a timeout.`,
    reason,
  );
}

/**
 * Runs `operation` and turns whatever it throws into a provider failure: an abort of `signal`
 * names the abort reason, anything else says that `doing` failed and adds `hint`.
 */
export async function providerOperation<T>(
  doing: string,
  signal: AbortSignal | undefined,
  operation: () => Promise<T>,
  hint = '',
): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof QuiesceError && error.code === 'provider-failed') throw error;
    if (signal?.aborted) throw abortedFailure(signal, doing);
    throw asProviderFailure(error, doing, hint);
  }
}
