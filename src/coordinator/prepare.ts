import { QuiesceError, componentKey, type Provider, type SnapshotLevel } from '../model/index.ts';
import { momentFor, planCaptureMoments } from './capture-plan.ts';
import { untilAborted } from '../util/index.ts';
import { advance, type Participant } from './participant.ts';
import { buildReport, pathsOf } from './set-report.ts';
import { activeParticipants, failWriter, recordRunning, type ProviderShare, type SetRun } from './set-run.ts';
import { withoutComponentFiles } from './snapshot-view.ts';
import { callDeadline, callWriter } from './writer-call.ts';

/**
 * Phase prepare-backup: the type, the components and their previous stamps; each writer
 * answers with the type it honours.
 */
export async function prepareBackupAll(run: SetRun): Promise<void> {
  await Promise.all(run.participants.filter((p) => p.metadata !== null).map((p) => prepareBackupOne(run, p)));
}

async function prepareBackupOne(run: SetRun, p: Participant): Promise<void> {
  const { options } = run;
  const components = p.metadata!.components.map((c) => {
    const key = componentKey(c);
    const stamp = options.previousStamp?.(p.writer.name, key, options.backupType);
    return stamp === undefined ? { component: key } : { component: key, previousStamp: stamp };
  });
  advance(p, 'prepared');
  try {
    const response = await callWriter(run.log, p, 'prepare-backup', callDeadline(run), (signal) =>
      p.writer.endpoint.prepareBackup({ setId: run.setId, backupType: options.backupType, components }, { signal }),
    );
    for (const plan of response.components) p.plans.set(plan.component, plan);
  } catch (error) {
    failWriter(run, p, QuiesceError.from(error, 'nonretryable', { phase: 'prepare-backup', writer: p.writer.name }));
  }
}

/** Holds the set until `beforePrepareSnapshot` lets it go on (a guest's set waits for its host here). */
export async function holdBeforePrepareSnapshot(run: SetRun): Promise<void> {
  const hold = run.options.beforePrepareSnapshot;
  if (!hold) return;
  await untilAborted(
    hold(() => buildReport(run)),
    run.signal,
  );
}

/**
 * Which paths the set captures (the plain ones and every component's files), when each is taken
 * (`planCaptureMoments`) and which provider takes each: the freeze holds only what a frozen
 * writer owns, or what an atomic provider takes in its one commit.
 */
export async function planCapture(run: SetRun): Promise<void> {
  const { options } = run;
  const planned = planCaptureMoments(run.participants, {
    paths: options.paths,
    plainPaths: options.plainPaths ?? 'live',
  });
  for (const { path, moment: wanted } of planned) {
    const resolved = await options.resolveProvider(path);
    const moment = momentFor(wanted, resolved.provider.atomic === true);
    if (moment === 'live') {
      run.livePaths.push(path);
      continue;
    }
    // A copy made while the applications run is no one point in time, whatever the provider.
    const level = moment === 'freeze' ? resolved.level : 'inconsistent';
    addToShare(moment === 'freeze' ? run.byProvider : run.afterThaw, resolved.provider, level, path);
    run.providersUsed.set(resolved.provider.name, resolved.provider);
  }
  const always = options.alwaysCommit;
  if (always !== undefined && !run.byProvider.has(always.provider)) {
    run.providersUsed.set(always.provider.name, always.provider);
    run.byProvider.set(always.provider, { level: always.level, paths: [] });
  }
  const componentFiles = new Set(run.participants.flatMap(pathsOf));
  run.known = options.knownFiles === undefined ? undefined : withoutComponentFiles(options.knownFiles, componentFiles);
  // Before any provider creates anything: a crash from here on leaves what the next set removes.
  await recordRunning(run);
}

function addToShare(shares: Map<Provider, ProviderShare>, provider: Provider, level: SnapshotLevel, path: string) {
  const share: ProviderShare = shares.get(provider) ?? { level, paths: [] };
  share.paths.push(path);
  shares.set(provider, share);
}

/** Every provider prepares its paths (slow, side-effect-free checks), one after another. */
export async function prepareProviders(run: SetRun): Promise<void> {
  for (const [provider, share] of run.byProvider) await prepareProvider(run, provider, share.paths);
  for (const [provider, share] of run.afterThaw) await prepareProvider(run, provider, share.paths);
}

async function prepareProvider(run: SetRun, provider: Provider, paths: string[]): Promise<void> {
  const t0 = run.log.elapsed();
  await provider.prepare(
    { setId: run.setId, paths, stagingDir: run.options.stagingDir },
    { signal: callDeadline(run) },
  );
  run.log.emit({
    phase: 'prepare-snapshot',
    provider: provider.name,
    event: 'end',
    durationMs: run.log.elapsed() - t0,
    result: `${paths.length} path(s)`,
  });
}

/** Phase prepare-snapshot: the slow part (checkpoints, flushes), in parallel. */
export async function prepareSnapshotAll(run: SetRun): Promise<void> {
  await Promise.all(
    activeParticipants(run).map(async (p) => {
      try {
        await callWriter(run.log, p, 'prepare-snapshot', callDeadline(run), (signal) =>
          p.writer.endpoint.prepareSnapshot({ setId: run.setId }, { signal }),
        );
      } catch (error) {
        failWriter(
          run,
          p,
          QuiesceError.from(error, 'nonretryable', { phase: 'prepare-snapshot', writer: p.writer.name }),
        );
      }
    }),
  );
}
