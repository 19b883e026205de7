import { join } from 'node:path';
import type {
  CallOptions,
  LeftoverSnapshot,
  Provider,
  ProviderSnapshot,
  ProviderSnapshotRequest,
  ProviderSupport,
  SnapshotPath,
  UnchangedFile,
} from '../../model/index.ts';
import { canonicalPath, findMount, mountOf, nearestExisting, readMounts, type Mount } from '../mounts.ts';
import { asProviderFailure, providerFailed, providerOperation, throwIfAborted } from '../provider-error.ts';
import { findCommand, isRoot, runCommand } from '../run-command.ts';
import {
  copyIntoSet,
  createSetDir,
  leftoverSetDirs,
  releaseSetDirs,
  removeSetDir,
  resolvePaths,
  setDirsHandle,
  SNAPSHOT_STORE,
  type ResolvedPath,
} from '../snapshot-layout.ts';
import { freezeWithGuardian, type FreezeGuardian } from './freeze-guardian.ts';

/** File systems whose kernel driver implements freeze. */
export const FREEZABLE = new Set(['ext3', 'ext4', 'xfs', 'btrfs']);

export interface FsfreezeProviderOptions {
  /**
   * The longest a file system may stay frozen: the copy is cancelled, and the guardian process
   * thaws by itself, after this long. Default 60 s.
   */
  maxFrozenMs?: number;
}

interface FreezePlan {
  /** The staging directory with symlinks resolved. */
  staging: string;
  /** The paths of each file system to freeze, keyed by its device. */
  groups: Map<string, { mount: Mount; paths: ResolvedPath[] }>;
  mountPoints: Set<string>;
}

/**
 * Freezes the file systems holding the paths (FIFREEZE, through `fsfreeze`), copies the paths
 * into the staging directory on another file system, and thaws. The copy is file-system
 * consistent, but the file systems stay frozen for as long as the copy takes: for small data.
 *
 * The freeze is held by a guardian child process (see `freezeWithGuardian`), so the file system
 * thaws even when this process is killed or hangs.
 */
export class FsfreezeProvider implements Provider {
  readonly name = 'fsfreeze' as const;
  private readonly maxFrozenMs: number;

  constructor(options: FsfreezeProviderOptions = {}) {
    this.maxFrozenMs = options.maxFrozenMs ?? 60_000;
  }

  async supports(path: string, options: CallOptions = {}): Promise<ProviderSupport> {
    const level = 'filesystem';
    if (!isRoot()) return { ok: false, reason: 'freezing a file system needs root', level };
    const [fsfreeze, timeout] = await Promise.all([findCommand('fsfreeze'), findCommand('timeout')]);
    if (fsfreeze === null) return { ok: false, reason: 'the fsfreeze command is missing (install util-linux)', level };
    if (timeout === null) return { ok: false, reason: 'the timeout command is missing (install coreutils)', level };
    const mount = await findMount(await nearestExisting(path), options);
    const refusal = refuseToFreeze(mount);
    if (refusal !== null) return { ok: false, reason: refusal, level };
    return {
      ok: true,
      reason: `freezes ${mount.mountPoint} (${mount.fsType}) while copying into the staging directory`,
      level,
    };
  }

  /**
   * Checks the plan, then writes back each file system's dirty data (`sync -f`) before the freeze:
   * FIFREEZE flushes whatever is dirty while every writer waits, and a gigabyte written a moment
   * ago makes that seconds. What is written between this sync and the freeze is flushed inside it.
   */
  async prepare(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<void> {
    const plan = await this.plan(request, options);
    if (request.afterThaw === true) return;
    const sync = await findCommand('sync');
    if (sync === null) return; // coreutils: without it the freeze only flushes more
    await Promise.all(
      [...plan.groups.values()].map(({ mount }) =>
        runCommand(sync, ['-f', mount.mountPoint], { ...options, hint: 'Check the file system is healthy.' }),
      ),
    );
  }

  async commit(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<ProviderSnapshot> {
    const doing = `the fsfreeze snapshot of set ${request.setId}`;
    return providerOperation(
      doing,
      options.signal,
      async () => {
        throwIfAborted(options.signal, doing);
        const [fsfreeze, timeout] = await Promise.all([findCommand('fsfreeze'), findCommand('timeout')]);
        if (fsfreeze === null || timeout === null) {
          throw providerFailed(
            'the fsfreeze provider needs the fsfreeze and timeout commands (util-linux, coreutils); install them or use another provider.',
          );
        }
        const plan = await this.plan(request, options);
        const setDir = join(plan.staging, request.setId);
        await createSetDir(setDir);
        const frozenTooLong = AbortSignal.timeout(this.maxFrozenMs);
        const signal = AbortSignal.any([frozenTooLong, ...(options.signal ? [options.signal] : [])]);
        const guardians: FreezeGuardian[] = [];
        try {
          const frozen = await Promise.allSettled(
            // After thaw the writers run again: copy as the files are, freezing nothing.
            [...(request.afterThaw === true ? [] : plan.groups.values())].map(({ mount }) =>
              freezeWithGuardian(mount.mountPoint, { maxFrozenMs: this.maxFrozenMs, fsfreeze, timeout, signal }),
            ),
          );
          for (const result of frozen) if (result.status === 'fulfilled') guardians.push(result.value);
          const refused = frozen.find((result) => result.status === 'rejected');
          if (refused !== undefined) throw asProviderFailure(refused.reason, doing);

          const paths: SnapshotPath[] = [];
          const unchanged: UnchangedFile[] = [];
          for (const { paths: group } of plan.groups.values()) {
            const copied = await copyIntoSet(setDir, group, {
              signal,
              clone: 'auto',
              exclude: new Set([plan.staging]),
              skipNames: new Set([SNAPSHOT_STORE]),
              stopAt: plan.mountPoints,
              ...(request.known ? { known: request.known } : {}),
            });
            paths.push(...copied.paths);
            unchanged.push(...copied.unchanged);
          }
          const early = guardians.find((guardian) => guardian.thawedEarly);
          if (early !== undefined) {
            throw providerFailed(
              `${early.mountPoint} thawed before the copy ended (the guardian's ${this.maxFrozenMs} ms ran out); raise maxFrozenMs or use a snapshotting provider (btrfs, reflink).`,
            );
          }
          await thawAll(guardians.splice(0));
          return { provider: this.name, setId: request.setId, paths, handle: setDirsHandle([setDir]), unchanged };
        } catch (error) {
          try {
            await thawAll(guardians); // a thaw failure is the more urgent news
          } finally {
            await removeSetDir(setDir, { removeEmptyParent: false });
          }
          if (frozenTooLong.aborted && !options.signal?.aborted) {
            throw providerFailed(
              `${doing} was cancelled: freezing and copying took longer than ${this.maxFrozenMs} ms, the longest a file system may stay frozen; ` +
                'snapshot less data with fsfreeze, raise maxFrozenMs, or use a snapshotting provider (btrfs, reflink).',
            );
          }
          throw error;
        }
      },
      'Check the staging directory has room and the paths are readable.',
    );
  }

  async release(snapshot: ProviderSnapshot, options: CallOptions = {}): Promise<void> {
    await releaseSetDirs(this.name, snapshot, { removeEmptyParent: false, signal: options.signal });
  }

  async leftovers(request: ProviderSnapshotRequest, _options: CallOptions = {}): Promise<LeftoverSnapshot | null> {
    const staging = await canonicalPath(request.stagingDir).catch(() => null);
    return staging === null ? null : leftoverSetDirs(this.name, request.setId, [staging]);
  }

  private async plan(request: ProviderSnapshotRequest, options: CallOptions): Promise<FreezePlan> {
    const staging = await canonicalPath(request.stagingDir);
    const [mounts, paths] = await Promise.all([readMounts(options), resolvePaths(request.paths)]);
    const stagingMount = mountOf(staging, mounts);
    const groups: FreezePlan['groups'] = new Map();
    for (const path of paths) {
      const mount = mountOf(path.physical, mounts);
      const refusal = refuseToFreeze(mount);
      if (refusal !== null) throw providerFailed(`cannot snapshot ${path.original} with fsfreeze: ${refusal}.`);
      if (mount.device === stagingMount.device) {
        throw providerFailed(
          `the staging directory ${request.stagingDir} is on the file system of ${path.original} (${mount.mountPoint}), ` +
            'which fsfreeze would freeze; put the staging directory on another file system.',
        );
      }
      const group = groups.get(mount.device) ?? { mount, paths: [] };
      group.paths.push(path);
      groups.set(mount.device, group);
    }
    return { staging, groups, mountPoints: new Set(mounts.map((m) => m.mountPoint)) };
  }
}

/** Why this mount must not be frozen, or null. */
function refuseToFreeze(mount: Mount): string | null {
  if (mount.mountPoint === '/')
    return 'it is on the root file system, which is never frozen (the system and quiesce itself run from it)';
  if (!FREEZABLE.has(mount.fsType))
    return `${mount.mountPoint} is ${mount.fsType}, which cannot be frozen (only ${[...FREEZABLE].join(', ')})`;
  if (mount.readOnly) return `${mount.mountPoint} is mounted read-only; the copy provider captures it without freezing`;
  return null;
}

/** Thaws every guardian, even when one fails; rethrows the first failure. */
async function thawAll(guardians: FreezeGuardian[]): Promise<void> {
  const results = await Promise.allSettled(guardians.map((guardian) => guardian.thaw()));
  const failed = results.find((result) => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}
