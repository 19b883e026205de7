import { z } from 'zod';

/** From best to worst. A whole carries the lowest level of its parts. */
export const CONSISTENCY_LEVELS = ['application', 'filesystem', 'crash', 'none'] as const;
export type ConsistencyLevel = (typeof CONSISTENCY_LEVELS)[number];
export const ConsistencyLevelSchema = z.enum(CONSISTENCY_LEVELS);

export function lowestConsistency(levels: Iterable<ConsistencyLevel>): ConsistencyLevel {
  let worst = 0;
  let any = false;
  for (const level of levels) {
    any = true;
    worst = Math.max(worst, CONSISTENCY_LEVELS.indexOf(level));
  }
  return any ? CONSISTENCY_LEVELS[worst]! : 'none';
}

/** What a quiesce failure does to the set: fail it, fall back to crash, or do not quiesce. */
export const QUIESCE_POLICIES = ['require', 'prefer', 'off'] as const;
export type QuiescePolicy = (typeof QUIESCE_POLICIES)[number];
export const QuiescePolicySchema = z.enum(QUIESCE_POLICIES);
