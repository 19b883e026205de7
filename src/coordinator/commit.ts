import { QuiesceError, type Provider } from '../model/index.ts';
import { afterThawSetId } from './capture-plan.ts';
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

/**
 * After thaw, before post-snapshot: the files of components readable after thaw are copied by
 * their providers while the applications run again (a database in backup mode), and the plain
 * paths that no provider takes are marked to be read in place. Neither is in any freeze window.
 */
export async function commitAfterThaw(run: SetRun): Promise<void> {
  if (run.afterThaw.size > 0) {
    const t0 = performance.now();
    try {
      for (const [provider, share] of run.afterThaw) await commitOne(run, provider, share, run.signal, true);
    } catch (raw) {
      const error = QuiesceError.from(raw, 'provider-failed', { phase: 'commit' });
      log(run, 'fail', performance.now() - t0, undefined, error);
      run.error ??= error;
      throw error;
    }
    log(run, 'end', performance.now() - t0, `${run.afterThaw.size} provider(s) copied after thaw`);
  }
  if (run.livePaths.length === 0) return;
  for (const path of run.livePaths) {
    run.snapshotLevels.set(path, 'inconsistent');
    run.snapshotRecords.push({ provider: 'live', original: path, snapshot: path });
  }
  log(run, 'info', undefined, `${run.livePaths.length} plain path(s) read in place after thaw (inconsistent)`);
}

function log(run: SetRun, event: 'end' | 'fail' | 'info', durationMs?: number, result?: string, error?: QuiesceError) {
  run.log.emit({
    phase: 'commit',
    event,
    ...(durationMs === undefined ? {} : { durationMs }),
    ...(result === undefined ? {} : { result }),
    ...(error === undefined ? {} : { error: error.toJSON() }),
  });
}

async function commitOne(
  run: SetRun,
  provider: Provider,
  share: ProviderShare,
  signal: AbortSignal,
  afterThaw = false,
): Promise<void> {
  const t0 = run.log.elapsed();
  const snapshot = await provider.commit(
    {
      setId: afterThaw ? afterThawSetId(run.setId) : run.setId,
      paths: share.paths,
      stagingDir: run.options.stagingDir,
      ...(run.known && !afterThaw ? { known: run.known } : {}),
      ...(afterThaw ? { afterThaw } : {}),
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
    result: `${snapshot.paths.length} path(s)${afterThaw ? ' after thaw' : ''}`,
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
