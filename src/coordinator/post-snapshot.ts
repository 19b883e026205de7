import { componentId, QuiesceError, componentKey } from '../model/index.ts';
import { wasPrepared, type Participant } from './participant.ts';
import { benignFailure, type SetRun } from './set-run.ts';
import { buildView } from './snapshot-view.ts';
import { callDeadline, callWriter } from './writer-call.ts';

/** Phase post-snapshot: stamps and partial files. A failure here is benign: it comes after thaw and a good commit. */
export async function postSnapshotAll(run: SetRun): Promise<void> {
  const snapshotPaths = run.snapshots.flatMap((s) => s.paths);
  const asked = run.participants.filter(
    (p) => wasPrepared(p) && p.error === null && run.options.postSnapshot !== false,
  );
  await Promise.all(
    asked.map(async (p) => {
      try {
        const response = await callWriter(run.log, p, 'post-snapshot', callDeadline(run), (signal) =>
          p.writer.endpoint.postSnapshot({ setId: run.setId, snapshots: snapshotPaths }, { signal }),
        );
        for (const result of response.components) p.results.set(result.component, result);
      } catch (error) {
        benignFailure(run, QuiesceError.from(error, 'nonretryable', { phase: 'post-snapshot', writer: p.writer.name }));
      }
    }),
  );
}

/** The requester reads the snapshot (runs the command, stores the backup) while the applications run. */
export async function useSnapshot(run: SetRun): Promise<void> {
  const { log, options } = run;
  if (!options.use) return;
  const t0 = log.elapsed();
  log.emit({ phase: 'post-snapshot', event: 'start', result: 'use' });
  run.useOutcome = await options.use(buildView(run), run.signal);
  if (run.useOutcome?.error) {
    log.emit({
      phase: 'post-snapshot',
      event: 'fail',
      durationMs: log.elapsed() - t0,
      error: run.useOutcome.error.toJSON(),
    });
    // The snapshot was good; what used it failed. The set fails, but consistency stands.
    run.error = run.useOutcome.error;
  } else {
    log.emit({ phase: 'post-snapshot', event: 'end', durationMs: log.elapsed() - t0, result: 'use' });
  }
}

/**
 * Phase backup-complete, per component with its success flag (writers move bases only for
 * succeeded, non-copy ones). A failure here is benign.
 */
export async function backupCompleteAll(run: SetRun): Promise<void> {
  const failedInUse = new Set((run.useOutcome?.failedComponents ?? []).map((f) => componentId(f.writer, f.component)));
  const asked = run.participants.filter((p) => wasPrepared(p) && p.metadata !== null && p.error === null);
  await Promise.all(asked.map((p) => backupCompleteOne(run, p, failedInUse)));
}

async function backupCompleteOne(run: SetRun, p: Participant, failedInUse: ReadonlySet<string>): Promise<void> {
  const { backupType } = run.options;
  const components = p.metadata!.components.map((c) => {
    const key = componentKey(c);
    const plan = p.plans.get(key);
    const stamp = p.results.get(key)?.newStamp;
    return {
      component: key,
      actualType: plan?.actualType ?? backupType,
      succeeded: run.error === null && !failedInUse.has(componentId(p.writer.name, key)),
      ...(stamp === undefined ? {} : { stamp }),
    };
  });
  try {
    await callWriter(run.log, p, 'backup-complete', callDeadline(run), (signal) =>
      p.writer.endpoint.backupComplete({ setId: run.setId, backupType, components }, { signal }),
    );
  } catch (error) {
    benignFailure(run, QuiesceError.from(error, 'nonretryable', { phase: 'backup-complete', writer: p.writer.name }));
  }
}
