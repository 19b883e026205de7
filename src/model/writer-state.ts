import type { Phase } from './phases.ts';

/** What `quiesce writers` shows, per docs/design.md, "Writer states and failure codes". */
export type WriterState =
  | 'stable'
  | 'waiting-for-freeze'
  | 'waiting-for-thaw'
  | 'waiting-for-post-snapshot'
  | 'waiting-for-backup-complete'
  | `failed-at-${Phase}`;

export function failedAt(phase: Phase): WriterState {
  return `failed-at-${phase}`;
}

export function isFailedState(state: WriterState): boolean {
  return state.startsWith('failed-at-');
}
