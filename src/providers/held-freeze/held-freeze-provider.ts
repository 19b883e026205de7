import {
  QuiesceError,
  type CallOptions,
  type Provider,
  type ProviderSnapshot,
  type ProviderSnapshotRequest,
  type ProviderSupport,
} from '../../model/index.ts';
import { waitOrAbort } from '../../util/index.ts';
import { freezeWithGuardian, type FreezeGuardian } from '../fsfreeze/freeze-guardian.ts';
import { FREEZABLE } from '../fsfreeze/fsfreeze-provider.ts';
import { mountOf, physicalPath, readMounts, type Mount } from '../mounts.ts';
import { findCommand } from '../run-command.ts';

export interface HeldFreezeOptions {
  /** Freeze the file systems at all (false: the guest's writers alone quiesce it). */
  freezeFilesystems: boolean;
  /** Allow freezing the guest's root file system (a VM's usual case; never on a machine quiesce shares). */
  freezeRoot: boolean;
  /** The guardian thaws by itself after this long, whatever happens to the agent. */
  maxFrozenMs: number;
  /** Called once every file system is frozen: the whole guest holds still now. */
  onFrozen(): void;
  /** Resolves when the host has taken its snapshot and says thaw. */
  released(): Promise<void>;
}

/**
 * The guest's side of its host's commit: the snapshot is the host's (of the disk images), so
 * "committing" here means freezing the guest's file systems, telling the host, and holding
 * until the host says thaw, the set's deadline passes, or the set is aborted. The freeze is
 * held by guardian processes, which thaw by themselves if this process dies.
 */
export class HeldFreezeProvider implements Provider {
  readonly name = 'host' as const;
  readonly atomic = true;
  /** The file systems not frozen, and why: for the report. */
  readonly skipped: string[] = [];

  constructor(private readonly options: HeldFreezeOptions) {}

  async supports(_path: string): Promise<ProviderSupport> {
    return {
      ok: true,
      reason: 'the host snapshots this guest; the guest holds still',
      level: this.options.freezeFilesystems ? 'filesystem' : 'crash',
    };
  }

  async prepare(): Promise<void> {}

  async commit(request: ProviderSnapshotRequest, options: CallOptions = {}): Promise<ProviderSnapshot> {
    const held: string[] = [];
    const guardians: FreezeGuardian[] = [];
    try {
      if (this.options.freezeFilesystems) {
        const plan = await this.plan(request.paths, options);
        const [fsfreeze, timeout] = await Promise.all([findCommand('fsfreeze'), findCommand('timeout')]);
        if (plan.size > 0 && (fsfreeze === null || timeout === null)) {
          throw new QuiesceError(
            'nonretryable',
            'freezing the guest file systems needs fsfreeze (util-linux) and timeout (coreutils); install them, or set agent.freezeFilesystems: false',
          );
        }
        const frozen = await Promise.allSettled(
          [...plan.values()].map(({ mount }) =>
            freezeWithGuardian(mount.mountPoint, {
              maxFrozenMs: this.options.maxFrozenMs,
              fsfreeze: fsfreeze!,
              timeout: timeout!,
              signal: options.signal,
            }),
          ),
        );
        for (const result of frozen) if (result.status === 'fulfilled') guardians.push(result.value);
        const refused = frozen.find((result) => result.status === 'rejected');
        if (refused !== undefined) throw QuiesceError.from(refused.reason, 'nonretryable', { phase: 'commit' });
        for (const { paths } of plan.values()) held.push(...paths);
      }
      this.options.onFrozen();
      await waitOrAbort(this.options.released(), options.signal);
      const early = guardians.find((guardian) => guardian.thawedEarly);
      if (early !== undefined) {
        throw new QuiesceError(
          'timeout',
          `${early.mountPoint} thawed by itself before the host said thaw (the guest's freeze deadline of ${this.options.maxFrozenMs} ms passed)`,
          { phase: 'commit' },
        );
      }
      return {
        provider: 'host',
        setId: request.setId,
        paths: held.map((path) => ({ original: path, snapshot: path })),
        handle: null,
      };
    } finally {
      await Promise.allSettled(guardians.map((guardian) => guardian.thaw()));
    }
  }

  async release(): Promise<void> {}

  /** The paths of each freezable file system, keyed by device; the rest are noted in `skipped`. */
  private async plan(paths: string[], options: CallOptions): Promise<Map<string, { mount: Mount; paths: string[] }>> {
    const mounts = await readMounts(options);
    const groups = new Map<string, { mount: Mount; paths: string[] }>();
    for (const path of paths) {
      const mount = mountOf(await physicalPath(path), mounts);
      const refusal =
        mount.mountPoint === '/' && !this.options.freezeRoot
          ? 'the root file system is frozen only with agent.freezeRoot: true'
          : !FREEZABLE.has(mount.fsType)
            ? `${mount.fsType} cannot be frozen`
            : mount.readOnly
              ? 'it is read-only'
              : null;
      if (refusal !== null) {
        this.skipped.push(`${path} on ${mount.mountPoint}: ${refusal}`);
        continue;
      }
      const group = groups.get(mount.device) ?? { mount, paths: [] };
      group.paths.push(path);
      groups.set(mount.device, group);
    }
    return groups;
  }
}
