import { basename, dirname, join, relative } from 'node:path';
import { z } from 'zod';
import type {
  CallOptions,
  LeftoverSnapshot,
  Provider,
  ProviderSnapshot,
  ProviderSnapshotRequest,
  ProviderSupport,
  SnapshotPath,
} from '../../model/index.ts';
import { exists, findMount, nearestExisting } from '../mounts.ts';
import { asProviderFailure, providerFailed, providerOperation, throwIfAborted } from '../provider-error.ts';
import { findCommand, isRoot, runCommand } from '../run-command.ts';
import {
  createSetDir,
  leftoverSetDirs,
  removeSetDir,
  resolvePaths,
  SNAPSHOT_STORE,
  type ResolvedPath,
} from '../snapshot-layout.ts';
import { subvolumeRoot } from './subvolume.ts';

/** The name of the snapshot subvolume inside `<subvolume>/.quiesce-snapshots/<set id>/`. */
const SNAPSHOT_NAME = 'snapshot';

const BtrfsHandleSchema = z.object({ snapshots: z.array(z.string().startsWith('/')) });

/**
 * Takes one read-only snapshot of each btrfs subvolume holding the paths, into
 * `<subvolume>/.quiesce-snapshots/<set id>/snapshot`. Instant and atomic per subvolume; all the
 * subvolumes of a set are snapshotted at once during the commit.
 *
 * A snapshot does not descend into nested subvolumes: they (and earlier sets' snapshots) appear
 * in it as empty directories. Needs root and btrfs-progs.
 */
export class BtrfsProvider implements Provider {
  readonly name = 'btrfs' as const;
  readonly atomic = true;

  async supports(path: string, options: CallOptions = {}): Promise<ProviderSupport> {
    const level = 'crash';
    if (!isRoot()) return { ok: false, reason: 'creating btrfs snapshots needs root', level };
    const existing = await nearestExisting(path);
    const mount = await findMount(existing, options);
    if (mount.fsType !== 'btrfs')
      return { ok: false, reason: `${mount.mountPoint} is ${mount.fsType}, not btrfs`, level };
    if (mount.readOnly) return { ok: false, reason: `${mount.mountPoint} is mounted read-only`, level };
    if ((await findCommand('btrfs')) === null)
      return { ok: false, reason: 'the btrfs command is missing (install btrfs-progs)', level };
    const root = await subvolumeRoot(existing);
    return { ok: true, reason: `read-only snapshot of the subvolume ${root}`, level };
  }

  async prepare(_request: ProviderSnapshotRequest, _options: CallOptions = {}): Promise<void> {}

  async commit(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<ProviderSnapshot> {
    const doing = `the btrfs snapshot of set ${request.setId}`;
    return providerOperation(doing, options.signal, async () => {
      throwIfAborted(options.signal, doing);
      const btrfs = await this.command();
      const groups = new Map<string, ResolvedPath[]>();
      for (const path of await resolvePaths(request.paths)) {
        if (!(await exists(path.physical))) continue;
        const root = await subvolumeRoot(path.physical);
        groups.set(root, [...(groups.get(root) ?? []), path]);
      }
      const created: string[] = [];
      try {
        for (const root of groups.keys()) {
          const setDir = join(root, SNAPSHOT_STORE, request.setId);
          await createSetDir(setDir);
          created.push(join(setDir, SNAPSHOT_NAME));
        }
        throwIfAborted(options.signal, doing);
        // All at once: the snapshots of one set are as close in time as we can make them.
        const results = await Promise.allSettled(
          [...groups.keys()].map((root, index) =>
            runCommand(btrfs, ['subvolume', 'snapshot', '-r', root, created[index]!], {
              signal: options.signal,
              hint: 'Check the file system has free space and the subvolume is not being deleted.',
            }),
          ),
        );
        const failed = results.find((result) => result.status === 'rejected');
        if (failed !== undefined) throw asProviderFailure(failed.reason, doing);

        const snapshots: SnapshotPath[] = [];
        [...groups.entries()].forEach(([root, paths], index) => {
          for (const { original, physical } of paths) {
            snapshots.push({ original, snapshot: join(created[index]!, relative(root, physical)) });
          }
        });
        const present = await Promise.all(snapshots.map((s) => exists(s.snapshot)));
        return {
          provider: this.name,
          setId: request.setId,
          paths: snapshots.filter((_, index) => present[index]),
          handle: { snapshots: created } satisfies z.infer<typeof BtrfsHandleSchema>,
        };
      } catch (error) {
        await this.remove(btrfs, created); // a failure here says what is left behind, which matters more
        throw error;
      }
    });
  }

  async release(snapshot: ProviderSnapshot, options: CallOptions = {}): Promise<void> {
    await providerOperation(`releasing the btrfs snapshot of set ${snapshot.setId}`, options.signal, async () => {
      const parsed = BtrfsHandleSchema.safeParse(snapshot.handle);
      const valid =
        parsed.success &&
        parsed.data.snapshots.every(
          (path) =>
            basename(path) === SNAPSHOT_NAME &&
            basename(dirname(path)) === snapshot.setId &&
            basename(dirname(dirname(path))) === SNAPSHOT_STORE,
        );
      if (!parsed.success || !valid) {
        throw providerFailed(
          `the btrfs snapshot handle of set "${snapshot.setId}" is not one this provider made; delete the snapshot by hand with \`btrfs subvolume delete\`.`,
        );
      }
      await this.remove(await this.command(), parsed.data.snapshots);
    });
  }

  /** The set directories under the snapshot store of every subvolume holding one of the paths, with their snapshots. */
  async leftovers(request: ProviderSnapshotRequest, _options: CallOptions = {}): Promise<LeftoverSnapshot | null> {
    const roots = new Set<string>();
    for (const path of await resolvePaths(request.paths)) {
      const existing = await nearestExisting(path.physical);
      roots.add(await subvolumeRoot(existing).catch(() => existing));
    }
    const found = await leftoverSetDirs(
      this.name,
      request.setId,
      [...roots].map((root) => join(root, SNAPSHOT_STORE)),
    );
    if (found === null) return null;
    const handle = { snapshots: found.dirs.map((dir) => join(dir, SNAPSHOT_NAME)) } satisfies z.infer<
      typeof BtrfsHandleSchema
    >;
    return { ...found, snapshot: { ...found.snapshot, handle } };
  }

  /**
   * Deletes snapshot subvolumes and their set directories; missing ones are skipped. Not
   * cancellable: it is the cleanup that must run.
   */
  private async remove(btrfs: string, snapshots: readonly string[]): Promise<void> {
    let firstFailure: unknown;
    for (const path of snapshots) {
      try {
        if (await exists(path)) {
          await runCommand(btrfs, ['subvolume', 'delete', path], {
            hint: `Delete it by hand with \`btrfs subvolume delete ${path}\`.`,
          });
        }
        await removeSetDir(dirname(path), { removeEmptyParent: true });
      } catch (error) {
        firstFailure ??= error;
      }
    }
    if (firstFailure !== undefined) throw asProviderFailure(firstFailure, 'removing the btrfs snapshot');
  }

  private async command(): Promise<string> {
    const btrfs = await findCommand('btrfs');
    if (btrfs === null)
      throw providerFailed('the btrfs command is missing; install btrfs-progs or use another provider.');
    return btrfs;
  }
}
