import { QuiesceError, type Provider } from '../model/index.ts';
import type { ProviderShare, SetRun } from './set-run.ts';

/** Phase commit: every provider snapshots its paths, inside every freeze window. */
export async function commitAll(run: SetRun): Promise<void> {
  const { log, freezeDeadline } = run;
  const commitSignal = AbortSignal.any([run.signal, freezeDeadline.signal, AbortSignal.timeout(run.commitTimeoutMs)]);
  const commitStart = performance.now();
  log.emit({ phase: 'commit', event: 'start' });
  try {
    await Promise.all([...run.byProvider].map(([provider, share]) => commitOne(run, provider, share, commitSignal)));
    if (freezeDeadline.signal.aborted) throw freezeDeadline.signal.reason as QuiesceError;
  } catch (raw) {
    const error = commitError(run, raw, commitSignal);
    log.emit({ phase: 'commit', event: 'fail', durationMs: performance.now() - commitStart, error: error.toJSON() });
    run.error ??= error;
    throw error;
  }
  run.commitMs = performance.now() - commitStart;
  run.committed = true;
  log.emit({ phase: 'commit', event: 'end', durationMs: run.commitMs, result: `${run.snapshots.length} snapshot(s)` });
}

async function commitOne(run: SetRun, provider: Provider, share: ProviderShare, signal: AbortSignal): Promise<void> {
  const t0 = run.log.elapsed();
  const snapshot = await provider.commit(
    {
      setId: run.setId,
      paths: share.paths,
      stagingDir: run.options.stagingDir,
      ...(run.known ? { known: run.known } : {}),
    },
    { signal },
  );
  run.snapshots.push(snapshot);
  for (const path of snapshot.paths) {
    run.snapshotLevels.set(path.original, share.level);
    run.snapshotRecords.push({ provider: provider.name, ...path });
  }
  run.log.emit({
    phase: 'commit',
    provider: provider.name,
    event: 'end',
    durationMs: run.log.elapsed() - t0,
    result: `${snapshot.paths.length} path(s)`,
  });
}

/** Why the commit failed: the freeze window ran out, its own deadline passed, or the provider failed. */
function commitError(run: SetRun, raw: unknown, commitSignal: AbortSignal): QuiesceError {
  if (run.freezeDeadline.signal.aborted) return run.freezeDeadline.signal.reason as QuiesceError;
  if (commitSignal.aborted && !run.signal.aborted) {
    return new QuiesceError(
      'timeout',
      `the commit took longer than its deadline of ${run.commitTimeoutMs} ms; raise policy.commitTimeout or use a faster provider (btrfs, reflink)`,
      { phase: 'commit', cause: raw },
    );
  }
  return QuiesceError.from(raw, 'provider-failed', { phase: 'commit' });
}
