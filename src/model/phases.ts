/** The phases of one snapshot set, in the order of docs/design.md, "The phases of one set". */
export const SET_PHASES = [
  'identify',
  'prepare-backup',
  'prepare-snapshot',
  'freeze',
  'commit',
  'thaw',
  'post-snapshot',
  'backup-complete',
  'shutdown',
] as const;
export type SetPhase = (typeof SET_PHASES)[number];

/** Restore runs its own phases. */
export const RESTORE_PHASES = ['pre-restore', 'post-restore'] as const;
export type RestorePhase = (typeof RESTORE_PHASES)[number];

/** Every phase a writer can be asked to run, or fail at. `abort` is a phase of its own. */
export type Phase = SetPhase | RestorePhase | 'abort';
export const ALL_PHASES: readonly Phase[] = [...SET_PHASES, ...RESTORE_PHASES, 'abort'];

/** Application order for freezing: front-end first, then back-end, then system. Thaw runs in reverse. */
export const WRITER_USAGES = ['front-end', 'back-end', 'system'] as const;
export type WriterUsage = (typeof WRITER_USAGES)[number];

export function usageRank(usage: WriterUsage): number {
  return WRITER_USAGES.indexOf(usage);
}
