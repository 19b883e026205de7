import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { messageOf, recordedProcessAlive } from '../util/index.ts';
import type { LeftoverSnapshot, Provider, ProviderSnapshotRequest } from '../model/index.ts';
import { afterThawSetId } from './capture-plan.ts';
import type { EventLog } from './event-log.ts';
import { listRunningSets, removeRunningSet, type RunningSet } from './running-sets.ts';
import { endSetProcesses } from './set-processes.ts';
import type { SnapshotSetOptions } from './set-options.ts';

/** What the cleanup removed of one dead set. */
export interface CleanedSet {
  setId: string;
  pid: number;
  startedAt: string;
  /** The directories (staging copies, snapshot set directories, btrfs snapshots) removed. */
  removed: string[];
  /** Their size on disk before, as `du` counts it. */
  bytes: number;
  /** Processes ended: its scripts' children and its command, left running. */
  processes: number;
  /** What could not be removed, and why (left for the next set to try again). */
  failures: string[];
}

/** The last cleanup that found anything, as `quiesce snapshot --list` shows it (`<stateDir>/cleanup.json`). */
export interface DeadSetCleanup {
  at: string;
  /** The set that cleaned up. */
  bySetId: string;
  sets: CleanedSet[];
  bytes: number;
}

const RELEASE_TIMEOUT_MS = 120_000;

function cleanupPath(stateDir: string): string {
  return join(stateDir, 'cleanup.json');
}

/** The last cleanup, or null when none found anything on this host. */
export async function readLastCleanup(stateDir: string): Promise<DeadSetCleanup | null> {
  try {
    return JSON.parse(await readFile(cleanupPath(stateDir), 'utf8')) as DeadSetCleanup;
  } catch {
    return null;
  }
}

/** The provider that took a dead set's share: by name among `options.providers`, else the one the paths resolve to now. */
async function providerFor(options: SnapshotSetOptions, share: RunningSet['shares'][number]): Promise<Provider | null> {
  const named = options.providers?.find((provider) => provider.name === share.provider);
  if (named) return named;
  if (share.paths.length === 0) return null;
  const resolved = await options.resolveProvider(share.paths[0]!).catch(() => null);
  return resolved?.provider.name === share.provider ? resolved.provider : null;
}

async function releaseLeftover(
  options: SnapshotSetOptions,
  share: RunningSet['shares'][number],
  request: ProviderSnapshotRequest,
  cleaned: CleanedSet,
): Promise<void> {
  try {
    const provider = await providerFor(options, share);
    const leftover: LeftoverSnapshot | null = (await provider?.leftovers?.(request)) ?? null;
    if (provider && leftover) {
      await provider.release(leftover.snapshot, { signal: AbortSignal.timeout(RELEASE_TIMEOUT_MS) });
      cleaned.removed.push(...leftover.dirs);
      cleaned.bytes += leftover.bytes;
    }
  } catch (error) {
    cleaned.failures.push(`${share.provider}: ${messageOf(error)}`);
  }
}

async function cleanOne(options: SnapshotSetOptions, record: RunningSet): Promise<CleanedSet> {
  const cleaned: CleanedSet = { ...record, removed: [], bytes: 0, processes: 0, failures: [] };
  delete (cleaned as Partial<RunningSet>).shares;
  delete (cleaned as Partial<RunningSet>).stagingDir;
  cleaned.processes = await endSetProcesses(record.setId);
  for (const share of record.shares) {
    // A share may have been copied after thaw, under its own set directory (`afterThawSetId`).
    for (const setId of [record.setId, afterThawSetId(record.setId)]) {
      await releaseLeftover(options, share, { setId, paths: share.paths, stagingDir: record.stagingDir }, cleaned);
    }
  }
  // The symlink view `quiesce snapshot` makes for its command.
  const view = join(record.stagingDir, `${record.setId}.view`);
  if ((await readdir(view).catch(() => null)) !== null) {
    await rm(view, { recursive: true, force: true });
    cleaned.removed.push(view);
  }
  if (cleaned.failures.length === 0) await removeRunningSet(options.stateDir, record.setId);
  return cleaned;
}

/**
 * The start of a set, with the host's set lock held: every set recorded as running whose process
 * is gone died mid-set (no other set can be running now), so its leftovers are removed: the
 * providers' copies and snapshots found by its id, the processes that carry its id, its record
 * (and torn records, and kept-set files half written). Sets kept with `--keep` are never touched.
 * Answers what was cleaned (and writes it to `cleanup.json`), or null when nothing was.
 */
export async function cleanDeadSets(
  options: SnapshotSetOptions,
  setId: string,
  log: EventLog,
): Promise<DeadSetCleanup | null> {
  const { sets, torn } = await listRunningSets(options.stateDir);
  const dead = sets.filter((record) => record.setId !== setId && !recordedProcessAlive(record.pid, record.start));
  const keptDir = join(options.stateDir, 'sets');
  const halfKept = (await readdir(keptDir).catch(() => [] as string[])).filter((name) => name.endsWith('.json.tmp'));
  for (const path of [...torn, ...halfKept.map((name) => join(keptDir, name))]) await rm(path, { force: true });
  if (dead.length === 0) return null;
  const cleaned: CleanedSet[] = [];
  for (const record of dead) cleaned.push(await cleanOne(options, record));
  const cleanup: DeadSetCleanup = {
    at: new Date().toISOString(),
    bySetId: setId,
    sets: cleaned,
    bytes: cleaned.reduce((sum, set) => sum + set.bytes, 0),
  };
  const path = cleanupPath(options.stateDir);
  await writeFile(`${path}.tmp`, JSON.stringify(cleanup, null, 2), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
  const processes = cleaned.reduce((sum, set) => sum + set.processes, 0);
  const failures = cleaned.flatMap((set) => set.failures);
  log.emit({
    phase: 'identify',
    event: 'info',
    result:
      `cleaned up ${cleaned.length} dead set(s) (${cleaned.map((set) => set.setId).join(', ')}): ` +
      `${cleaned.reduce((sum, set) => sum + set.removed.length, 0)} director(ies), ${cleanup.bytes} bytes, ${processes} process(es)` +
      (failures.length > 0 ? `; left: ${failures.join('; ')}` : ''),
  });
  return cleanup;
}
