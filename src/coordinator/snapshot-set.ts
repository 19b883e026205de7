import { QuiesceError, type SetReport } from '../model/index.ts';
import { commitAfterThaw, commitAll } from './commit.ts';
import { freezeAll } from './freeze.ts';
import { identifyAll } from './identify.ts';
import { backupCompleteAll, postSnapshotAll, useSnapshot } from './post-snapshot.ts';
import {
  holdBeforePrepareSnapshot,
  planCapture,
  prepareBackupAll,
  prepareProviders,
  prepareSnapshotAll,
} from './prepare.ts';
import type { SnapshotSetOptions } from './set-options.ts';
import { buildReport } from './set-report.ts';
import { reportCleanupFailure, startSetRun, throwIfFailed, type SetRun } from './set-run.ts';
import { endSet } from './shutdown.ts';
import { thawAfterCommit } from './thaw.ts';
import { recordWriterOutcomes } from './writer-history.ts';

/**
 * Runs one snapshot set through every phase of docs/design.md:
 * identify, prepare-backup, prepare-snapshot, freeze (front-end, back-end, system), commit,
 * thaw, post-snapshot, use, backup-complete, shutdown.
 *
 * Thaw is guaranteed three ways: the `finally` path here, a timer that thaws every writer when
 * the freeze-to-thaw deadline passes, and the watchdog in each writer's own process (armed by
 * the deadline passed in freeze, and by the session that closes when this process dies).
 */
export async function runSnapshotSet(options: SnapshotSetOptions): Promise<SetReport> {
  const run = await startSetRun(options);
  try {
    await runPhases(run);
  } catch (raw) {
    run.error ??= QuiesceError.from(raw, 'nonretryable');
  } finally {
    await endSet(run);
  }
  const report = buildReport(run);
  run.log.emit({ phase: 'shutdown', event: 'info', result: `${report.status}, consistency ${report.consistency}` });
  await recordWriterOutcomes(options.stateDir, report).catch((error: unknown) =>
    reportCleanupFailure(run, 'shutdown', error),
  );
  return report;
}

/** The phases up to backup-complete; the first failure of the set stops them (`endSet` cleans up). */
async function runPhases(run: SetRun): Promise<void> {
  await identifyAll(run);
  throwIfFailed(run);
  await prepareBackupAll(run);
  throwIfFailed(run);
  await holdBeforePrepareSnapshot(run);
  throwIfFailed(run);
  await planCapture(run);
  await prepareProviders(run);
  await prepareSnapshotAll(run);
  throwIfFailed(run);
  await freezeAll(run);
  await commitAll(run);
  await thawAfterCommit(run);
  await commitAfterThaw(run);
  await postSnapshotAll(run);
  await useSnapshot(run);
  await backupCompleteAll(run);
}
