import { z } from 'zod';

/**
 * From best to worst. A whole carries the lowest level of its parts.
 * - application: every writer of it quiesced and the commit fell inside every freeze window;
 * - filesystem: the file system was frozen, no application writer took part;
 * - crash: one point in time for the whole path (an atomic snapshot), like a power cut;
 * - inconsistent: copied or cloned file by file while nothing froze it: each file as it was
 *   when read, not one point in time;
 * - none: not captured.
 */
export const CONSISTENCY_LEVELS = ['application', 'filesystem', 'crash', 'inconsistent', 'none'] as const;
export type ConsistencyLevel = (typeof CONSISTENCY_LEVELS)[number];
export const ConsistencyLevelSchema = z.enum(CONSISTENCY_LEVELS);

/** What a snapshot gives a path by itself, with no writer's freeze. */
export type SnapshotLevel = 'filesystem' | 'crash' | 'inconsistent';

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
