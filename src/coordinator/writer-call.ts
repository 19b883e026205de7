import { QuiesceError, type Phase } from '../model/index.ts';
import { untilAborted } from '../util/index.ts';
import type { EventLog } from './event-log.ts';
import type { Participant } from './participant.ts';

/**
 * Runs one writer call with events, a deadline and failure bookkeeping. The call's answer, or a
 * rejection as soon as `signal` aborts: a writer that ignores the signal cannot hold the set.
 * The coordinator stops waiting and calls it not-responding; the writer's own watchdog and the
 * later abort undo whatever that call still does.
 */
export async function callWriter<T>(
  log: EventLog,
  p: Participant,
  phase: Phase,
  signal: AbortSignal,
  body: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const t0 = log.elapsed();
  log.emit({ phase, writer: p.writer.name, event: 'start' });
  try {
    const value = await untilAborted(body(signal), signal);
    log.emit({ phase, writer: p.writer.name, event: 'end', durationMs: log.elapsed() - t0, result: 'ok' });
    return value;
  } catch (raw) {
    const error = signal.aborted
      ? abortedCallError(p, phase, signal, raw)
      : QuiesceError.from(raw, 'nonretryable', { phase, writer: p.writer.name });
    log.emit({ phase, writer: p.writer.name, event: 'fail', durationMs: log.elapsed() - t0, error: error.toJSON() });
    throw error;
  }
}

/** The deadline of a writer call (and of a provider's prepare): the call timeout, or sooner if the set is aborted. */
export function callDeadline(run: { signal: AbortSignal; callTimeoutMs: number }): AbortSignal {
  return AbortSignal.any([run.signal, AbortSignal.timeout(run.callTimeoutMs)]);
}

/** A set aborted by someone else cancels this call; a deadline means this writer was too slow. */
function abortedCallError(p: Participant, phase: Phase, signal: AbortSignal, raw: unknown): QuiesceError {
  const reason: unknown = signal.reason;
  if (reason instanceof QuiesceError && reason.code !== 'timeout') {
    return new QuiesceError('retryable', `${phase} of writer ${p.writer.name} was cancelled: ${reason.message}`, {
      phase,
      writer: p.writer.name,
      cause: raw,
    });
  }
  return new QuiesceError(
    'not-responding',
    `writer ${p.writer.name} did not answer ${phase} in time; is its process alive and responsive?`,
    { phase, writer: p.writer.name, cause: raw },
  );
}
