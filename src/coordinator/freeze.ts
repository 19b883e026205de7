import { setMaxListeners } from 'node:events';
import { QuiesceError } from '../model/index.ts';
import { abortOne } from './abort.ts';
import { advance, groupsByUsage, type Participant } from './participant.ts';
import { activeParticipants, failWriter, reportCleanupFailure, throwIfFailed, type SetRun } from './set-run.ts';
import { thawAll } from './thaw.ts';
import { callWriter } from './writer-call.ts';

/**
 * Phase freeze, in application order (front-end, back-end, system); the freeze window starts
 * with the first freeze, and its timer thaws everyone if the commit has not finished by then.
 */
export async function freezeAll(run: SetRun): Promise<void> {
  run.freezeStart = performance.now();
  armFreezeTimer(run);
  const freezeSignal = AbortSignal.any([run.signal, run.freezeDeadline.signal]);
  setMaxListeners(0, freezeSignal);
  for (const group of groupsByUsage(activeParticipants(run))) {
    await Promise.all(group.map((p) => freezeOne(run, p, freezeSignal)));
    if (run.error || run.freezeDeadline.signal.aborted) break;
  }
  throwIfFailed(run);
  if (run.freezeDeadline.signal.aborted) throw run.freezeDeadline.signal.reason as QuiesceError;
}

function armFreezeTimer(run: SetRun): void {
  run.freezeTimer = setTimeout(() => {
    run.freezeDeadline.abort(
      new QuiesceError('timeout', `the freeze window of ${run.freezeTimeoutMs} ms ran out before the commit finished`, {
        phase: 'commit',
      }),
    );
    // The coordinator's own timer: thaw now, whatever the commit is doing.
    thawAll(run, 'the commit finished').catch((error: unknown) => reportCleanupFailure(run, 'thaw', error));
  }, run.freezeTimeoutMs);
}

async function freezeOne(run: SetRun, p: Participant, freezeSignal: AbortSignal): Promise<void> {
  try {
    await callWriter(run.log, p, 'freeze', freezeSignal, (signal) =>
      p.writer.endpoint.freeze({ setId: run.setId, thawDeadlineMs: run.freezeTimeoutMs }, { signal }),
    );
    advance(p, 'frozen');
    p.frozenAt = performance.now();
  } catch (error) {
    failWriter(run, p, QuiesceError.from(error, 'nonretryable', { phase: 'freeze', writer: p.writer.name }));
    await abortOne(run, p);
  }
}
