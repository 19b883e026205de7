import { QuiesceError } from '../model/index.ts';
import { abortAll } from './abort.ts';
import { saveKeptSet } from './kept-sets.ts';
import type { Participant } from './participant.ts';
import { removeRunningSet } from './running-sets.ts';
import { reportCleanupFailure, type SetRun } from './set-run.ts';
import { thawAll } from './thaw.ts';
import { callWriter } from './writer-call.ts';

/**
 * The end of every set, whatever happened before: thaw and abort are structural, so nothing
 * stays frozen; then the snapshots are kept or released, the writers shut down, the lock freed.
 */
export async function endSet(run: SetRun): Promise<void> {
  if (run.freezeTimer) clearTimeout(run.freezeTimer);
  await thawAll(run, 'the set failed');
  if (run.error) await abortAll(run);
  await keepOrReleaseSnapshots(run);
  await shutdownAll(run);
  await removeRunningSet(run.options.stateDir, run.setId).catch((error: unknown) =>
    reportCleanupFailure(run, 'shutdown', error),
  );
  await run.lock.release();
  clearInterval(run.keepAlive);
}

/** Keeps the snapshots of a good set with `--keep` (for `quiesce snapshot --release`), or releases them. */
async function keepOrReleaseSnapshots(run: SetRun): Promise<void> {
  if (run.options.keep && run.error === null && run.snapshots.length > 0) {
    await saveKeptSet(run.options.stateDir, {
      setId: run.setId,
      createdAt: run.startedAt.toISOString(),
      snapshots: run.snapshots,
    });
    run.kept = true;
  } else {
    await releaseSnapshots(run);
  }
}

async function releaseSnapshots(run: SetRun): Promise<void> {
  const { log } = run;
  for (const snapshot of run.snapshots.splice(0)) {
    const t0 = log.elapsed();
    try {
      const provider = run.providersUsed.get(snapshot.provider);
      await provider?.release(snapshot, { signal: AbortSignal.timeout(run.callTimeoutMs) });
      log.emit({
        phase: 'shutdown',
        provider: snapshot.provider,
        event: 'end',
        durationMs: log.elapsed() - t0,
        result: 'released',
      });
    } catch (error) {
      log.emit({
        phase: 'shutdown',
        provider: snapshot.provider,
        event: 'fail',
        error: QuiesceError.from(error, 'provider-failed').toJSON(),
      });
    }
  }
}

/** Phase shutdown: every identified writer hears the set ended, and every session closes. */
async function shutdownAll(run: SetRun): Promise<void> {
  await Promise.all(run.participants.map((p) => shutdownOne(run, p)));
}

async function shutdownOne(run: SetRun, p: Participant): Promise<void> {
  if (p.metadata !== null) {
    try {
      await callWriter(run.log, p, 'shutdown', AbortSignal.timeout(run.callTimeoutMs), (signal) =>
        p.writer.endpoint.shutdown({ setId: run.setId }, { signal }),
      );
    } catch {
      // callWriter logged it as a fail event; the set is over either way.
    }
  }
  await p.session?.close().catch((error: unknown) => reportCleanupFailure(run, 'shutdown', error, p.writer.name));
}
