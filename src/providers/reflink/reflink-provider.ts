import { constants } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  CallOptions,
  LeftoverSnapshot,
  Provider,
  ProviderSnapshot,
  ProviderSnapshotRequest,
  ProviderSupport,
  SnapshotLevel,
  SnapshotPath,
  UnchangedFile,
} from '../../model/index.ts';
import { removeTree } from '../fs-tree.ts';
import { findMount, mountOf, nearestExisting, readMounts, type Mount } from '../mounts.ts';
import { isErrno, messageOf } from '../../util/index.ts';
import { asProviderFailure, providerOperation, throwIfAborted } from '../provider-error.ts';
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

/**
 * Clones every file under the paths (FICLONE: shared extents, copy-on-write) into
 * `<mount point>/.quiesce-snapshots/<set id>/root/<path>` on the same file system. Fast and
 * independent of later writes; needs a file system that clones (XFS with reflink=1, btrfs).
 * Files are cloned one by one: a single file's clone is one point in time (crash), a directory's
 * is each file as it was when cloned (inconsistent) unless a frozen writer holds it still.
 */
export class ReflinkProvider implements Provider {
  readonly name = 'reflink' as const;

  async supports(path: string, options: CallOptions = {}): Promise<ProviderSupport> {
    const level = await cloneLevel(path);
    const mount = await findMount(await nearestExisting(path), options);
    if (mount.readOnly) return { ok: false, reason: `${mount.mountPoint} is mounted read-only`, level };
    const failure = await probeClone(mount);
    if (failure !== null) return { ok: false, reason: failure, level };
    return {
      ok: true,
      reason: `clones files on ${mount.mountPoint} (${mount.fsType}) into ${join(mount.mountPoint, SNAPSHOT_STORE)}`,
      level,
    };
  }

  async prepare(_request: ProviderSnapshotRequest, _options: CallOptions = {}): Promise<void> {}

  async commit(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<ProviderSnapshot> {
    const doing = `the reflink snapshot of set ${request.setId}`;
    return providerOperation(
      doing,
      options.signal,
      async () => {
        throwIfAborted(options.signal, doing);
        const [mounts, paths] = await Promise.all([readMounts(options), resolvePaths(request.paths)]);
        const groups = new Map<string, { mount: Mount; paths: ResolvedPath[] }>();
        for (const path of paths) {
          const mount = mountOf(path.physical, mounts);
          const group = groups.get(mount.mountPoint) ?? { mount, paths: [] };
          group.paths.push(path);
          groups.set(mount.mountPoint, group);
        }
        const mountPoints = new Set(mounts.map((m) => m.mountPoint));
        const setDirs: string[] = [];
        try {
          const snapshots: SnapshotPath[] = [];
          const unchanged: UnchangedFile[] = [];
          for (const { mount, paths: group } of groups.values()) {
            const store = join(mount.mountPoint, SNAPSHOT_STORE);
            const setDir = join(store, request.setId);
            await createSetDir(setDir);
            setDirs.push(setDir);
            const copied = await copyIntoSet(setDir, group, {
              signal: options.signal,
              clone: 'force',
              exclude: new Set([store]),
              skipNames: new Set([SNAPSHOT_STORE]),
              stopAt: mountPoints,
              ...(request.known ? { known: request.known } : {}),
            });
            snapshots.push(...copied.paths);
            unchanged.push(...copied.unchanged);
          }
          return {
            provider: this.name,
            setId: request.setId,
            paths: snapshots,
            handle: setDirsHandle(setDirs),
            unchanged,
          };
        } catch (error) {
          for (const setDir of setDirs) await removeSetDir(setDir, { removeEmptyParent: true });
          if (isErrno(error, 'EXDEV', 'EOPNOTSUPP', 'ENOTSUP', 'EINVAL')) {
            throw asProviderFailure(error, doing, 'The file system cannot clone these files; use another provider.');
          }
          throw error;
        }
      },
      'Check the file system has room for the metadata of the clones.',
    );
  }

  async release(snapshot: ProviderSnapshot, options: CallOptions = {}): Promise<void> {
    await releaseSetDirs(this.name, snapshot, { removeEmptyParent: true, signal: options.signal });
  }

  /** The set directories under the snapshot store of every mount holding one of the paths. */
  async leftovers(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<LeftoverSnapshot | null> {
    const [mounts, paths] = await Promise.all([readMounts(options), resolvePaths(request.paths)]);
    const stores = paths.map((path) => join(mountOf(path.physical, mounts).mountPoint, SNAPSHOT_STORE));
    return leftoverSetDirs(this.name, request.setId, stores);
  }
}

/** Clones a tiny file where the snapshots would go; null when that works, else why not. */
async function probeClone(mount: Mount): Promise<string | null> {
  const store = join(mount.mountPoint, SNAPSHOT_STORE);
  let createdStore = false;
  let probeDir: string | undefined;
  try {
    createdStore = (await mkdir(store, { recursive: true, mode: 0o700 })) !== undefined;
    probeDir = await mkdtemp(join(store, '.probe-'));
    await writeFile(join(probeDir, 'a'), 'quiesce reflink probe\n');
    await copyFile(join(probeDir, 'a'), join(probeDir, 'b'), constants.COPYFILE_FICLONE_FORCE);
    return null;
  } catch (error) {
    if (isErrno(error, 'EXDEV', 'EOPNOTSUPP', 'ENOTSUP', 'EINVAL', 'ENOSYS', 'ENOTTY')) {
      return `${mount.fsType} at ${mount.mountPoint} cannot clone files (reflink)`;
    }
    if (isErrno(error, 'EACCES', 'EPERM', 'EROFS')) return `cannot write ${store} (${(error as Error).message})`;
    return `the reflink probe on ${mount.mountPoint} failed: ${messageOf(error)}`;
  } finally {
    if (probeDir !== undefined) await removeTree(probeDir).catch(() => {});
    if (createdStore) await rmdir(store).catch(() => {});
  }
}

/** One file clones in one step (one point in time); a tree clones file by file. */
async function cloneLevel(path: string): Promise<SnapshotLevel> {
  try {
    return (await lstat(path)).isFile() ? 'crash' : 'inconsistent';
  } catch {
    return 'inconsistent';
  }
}
