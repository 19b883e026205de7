import type { Participant } from './participant.ts';

/**
 * When a captured path is taken:
 * - `freeze`: inside every writer's freeze window, by the commit (a frozen writer's files, and
 *   every path of an atomic provider: one btrfs snapshot takes the whole subvolume at once);
 * - `after-thaw`: copied by its provider once the writers run again, before post-snapshot (the
 *   files of a component its writer marked `readableAfterThaw`);
 * - `live`: read in place by the requester after thaw, with no copy (a plain path no frozen
 *   writer owns: a copy would be no more one point in time than the read itself).
 */
export type CaptureMoment = 'freeze' | 'after-thaw' | 'live';

/** One path the set captures, and whose it is. */
export interface CapturePath {
  path: string;
  /** The component's writer, or null for a plain path. */
  owner: Participant | null;
  moment: CaptureMoment;
}

export interface CapturePlanOptions {
  /** The config's plain paths. */
  paths: readonly string[];
  /**
   * When a plain path is taken by a copy-based provider: `live` (a backup reads it in place),
   * `after-thaw` (a snapshot that outlives its read, `quiesce snapshot`, copies it once the
   * writers run again) or `freeze` (`policy.plainPaths: in-freeze`: fsfreeze gives `filesystem`).
   */
  plainPaths: CaptureMoment;
}

/** Whether `path` is `dir` or lies below it. */
export function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * Every path of the set with the moment it is taken, before the providers are chosen (an atomic
 * provider moves its paths into the freeze: `momentFor`). A plain path inside a component's path
 * is left out: the component's copy holds it, and at the component's level.
 */
export function planCaptureMoments(participants: readonly Participant[], options: CapturePlanOptions): CapturePath[] {
  const planned = new Map<string, CapturePath>();
  for (const p of participants) {
    for (const component of p.metadata?.components ?? []) {
      const moment = component.readableAfterThaw ? 'after-thaw' : 'freeze';
      for (const file of component.files) {
        const earlier = planned.get(file.path);
        // A file two components name is taken at the stricter moment.
        if (earlier === undefined || earlier.moment === 'after-thaw') {
          planned.set(file.path, { path: file.path, owner: p, moment });
        }
      }
    }
  }
  const owned = [...planned.keys()];
  for (const path of options.paths) {
    if (planned.has(path) || owned.some((dir) => isWithin(path, dir))) continue;
    planned.set(path, { path, owner: null, moment: options.plainPaths });
  }
  return [...planned.values()];
}

/** The moment a path is really taken once its provider is known: an atomic provider takes everything in its commit. */
export function momentFor(planned: CaptureMoment, atomic: boolean): CaptureMoment {
  return atomic ? 'freeze' : planned;
}

/** The set id under which a set's after-thaw copies are made, apart from its in-freeze copies by the same provider. */
export function afterThawSetId(setId: string): string {
  return `${setId}.after-thaw`;
}
