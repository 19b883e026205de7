import type { SnapshotLevel } from '../model/index.ts';
import {
  usageRank,
  type ComponentPlan,
  type ComponentResult,
  type QuiesceError,
  type WriterMetadata,
  type WriterSession,
  type WriterState,
} from '../model/index.ts';
import type { SetWriter } from './set-options.ts';

/**
 * How far a writer got in the set. Each stage may only follow the one before it: a writer is
 * identified, asked to prepare its backup, frozen, asked to thaw, thawed, and only then, if
 * nothing failed, quiesced (application-consistent, docs/design.md invariant 2).
 *
 * A failure is not a stage: what the set must still do for a writer (abort it, thaw it) depends
 * on how far it got, whatever failed. It is the participant's `error`, beside the stage.
 */
export const PARTICIPANT_STAGES = [
  'listed',
  'identified',
  'prepared',
  'frozen',
  'thawing',
  'thawed',
  'quiesced',
] as const;
export type ParticipantStage = (typeof PARTICIPANT_STAGES)[number];

/** The stage `stage` must follow; null for the first. */
function stageBefore(stage: ParticipantStage): ParticipantStage | null {
  switch (stage) {
    case 'listed':
      return null;
    case 'identified':
      return 'listed';
    case 'prepared':
      return 'identified';
    case 'frozen':
      return 'prepared';
    case 'thawing':
      return 'frozen';
    case 'thawed':
      return 'thawing';
    case 'quiesced':
      return 'thawed';
    default:
      return stage satisfies never;
  }
}

/** Per-writer bookkeeping across the phases. */
export interface Participant {
  readonly writer: SetWriter;
  stage: ParticipantStage;
  metadata: WriterMetadata | null;
  session: WriterSession | null;
  plans: Map<string, ComponentPlan>;
  results: Map<string, ComponentResult>;
  /** What its freeze reached: `filesystem` for a writer that freezes file systems alone (thaw says so). */
  level: 'application' | SnapshotLevel;
  frozenAt: number | null;
  freezeWindowMs: number | null;
  /** Its first failure. */
  error: QuiesceError | null;
  /** What `quiesce writers` shows once it failed: `failed-at-<the phase of its latest failure>`. */
  writerState: WriterState;
}

export function newParticipant(writer: SetWriter): Participant {
  return {
    writer,
    stage: 'listed',
    metadata: null,
    session: null,
    plans: new Map(),
    results: new Map(),
    level: 'application',
    frozenAt: null,
    freezeWindowMs: null,
    error: null,
    writerState: 'stable',
  };
}

/** Moves `p` to `to`, which must follow its stage; anything else is a bug of the coordinator's. */
export function advance(p: Participant, to: ParticipantStage): void {
  const from = stageBefore(to);
  if (from !== p.stage) {
    throw new Error(
      `writer ${p.writer.name} cannot go from stage ${p.stage} to ${to} (only from ${from ?? 'nowhere'})`,
    );
  }
  p.stage = to;
}

/** True once `p` got to `stage` (or further). */
export function hasReached(p: Participant, stage: ParticipantStage): boolean {
  return PARTICIPANT_STAGES.indexOf(p.stage) >= PARTICIPANT_STAGES.indexOf(stage);
}

/** Took part in prepare-backup: gets abort if the set fails. */
export function wasPrepared(p: Participant): boolean {
  return hasReached(p, 'prepared');
}

/**
 * Out of quiescing: its policy is off, or it failed (and its policy is prefer, or the set
 * fails). Its files are still captured, at a lower level.
 */
export function isDegraded(p: Participant): boolean {
  return p.writer.policy === 'off' || p.error !== null;
}

/** Writers grouped by application order: front-end, back-end, system. */
export function groupsByUsage<T extends { metadata: WriterMetadata | null }>(items: T[]): T[][] {
  const groups: T[][] = [[], [], []];
  for (const item of items) groups[usageRank(item.metadata?.usage ?? 'back-end')]!.push(item);
  return groups.filter((g) => g.length > 0);
}
