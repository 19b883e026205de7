import { isAbsolute, join } from 'node:path';
import type {
  CallOptions,
  LeftoverSnapshot,
  Provider,
  ProviderSnapshot,
  ProviderSnapshotRequest,
  ProviderSupport,
} from '../../model/index.ts';
import { canonicalPath } from '../mounts.ts';
import { providerFailed, providerOperation, throwIfAborted } from '../provider-error.ts';
import {
  copyIntoSet,
  createSetDir,
  leftoverSetDirs,
  releaseSetDirs,
  removeSetDir,
  resolvePaths,
  setDirsHandle,
  SNAPSHOT_STORE,
} from '../snapshot-layout.ts';

/**
 * Copies the paths into the staging directory while the writers are frozen. Needs no privilege
 * and works on any file system (it clones where the staging directory shares one that can), but
 * the copy is only as consistent as the writers make it, and the freeze lasts as long as the copy.
 */
export class CopyProvider implements Provider {
  readonly name = 'copy' as const;

  async supports(_path: string, _options: CallOptions = {}): Promise<ProviderSupport> {
    return {
      ok: true,
      reason: 'copies the files into the staging directory while the writers are frozen',
      // A copy reads file after file, each as it is at that moment: one point in time only for
      // what a frozen writer holds still.
      level: 'inconsistent',
    };
  }

  async prepare(request: ProviderSnapshotRequest, _options: CallOptions = {}): Promise<void> {
    if (!isAbsolute(request.stagingDir)) {
      throw providerFailed(
        `the staging directory ${request.stagingDir} is not an absolute path; configure an absolute one.`,
      );
    }
  }

  async commit(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<ProviderSnapshot> {
    return providerOperation(
      `the copy snapshot of set ${request.setId}`,
      options.signal,
      async () => {
        throwIfAborted(options.signal, `the copy snapshot of set ${request.setId}`);
        await this.prepare(request);
        const staging = await canonicalPath(request.stagingDir);
        const setDir = join(staging, request.setId);
        const paths = await resolvePaths(request.paths);
        await createSetDir(setDir);
        try {
          const copied = await copyIntoSet(setDir, paths, {
            signal: options.signal,
            clone: 'auto',
            exclude: new Set([staging]),
            skipNames: new Set([SNAPSHOT_STORE]),
            ...(request.known ? { known: request.known } : {}),
          });
          return {
            provider: this.name,
            setId: request.setId,
            paths: copied.paths,
            handle: setDirsHandle([setDir]),
            unchanged: copied.unchanged,
          };
        } catch (error) {
          await removeSetDir(setDir, { removeEmptyParent: false });
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
}
