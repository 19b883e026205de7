import { wasPrepared, type Participant } from './participant.ts';
import type { SetRun } from './set-run.ts';
import { thawOne } from './thaw.ts';
import { callWriter } from './writer-call.ts';

/** Abort every writer that took part in prepare-backup, when the set failed. */
export async function abortAll(run: SetRun): Promise<void> {
  await Promise.all(run.participants.filter(wasPrepared).map((p) => askAbort(run, p)));
}

/** A writer that failed its freeze is thawed and aborted at once; the others go on under prefer. */
export async function abortOne(run: SetRun, p: Participant): Promise<void> {
  if (p.stage === 'frozen') await thawOne(run, p, 'the freeze failed');
  await askAbort(run, p);
}

async function askAbort(run: SetRun, p: Participant): Promise<void> {
  try {
    await callWriter(run.log, p, 'abort', AbortSignal.timeout(run.callTimeoutMs), (signal) =>
      p.writer.endpoint.abort({ setId: run.setId }, { signal }),
    );
  } catch {
    // callWriter logged it as a fail event; abort is best effort on top of the writer's own watchdog.
  }
}
