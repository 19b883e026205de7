import type { CatalogEntry } from './catalog.ts';

/** restic-style keep rules: the newest N sets, and the newest set of each of the last N hours, days, ... */
export interface ForgetPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** Keep every set with one of these tags. */
  tags?: string[];
}

export interface ForgetDecision {
  keep: { entry: CatalogEntry; reasons: string[] }[];
  remove: CatalogEntry[];
}

type Bucket = (date: Date) => string;

const BUCKETS: [keyof ForgetPolicy, string, Bucket][] = [
  ['hourly', 'hourly', (d) => d.toISOString().slice(0, 13)],
  ['daily', 'daily', (d) => d.toISOString().slice(0, 10)],
  ['weekly', 'weekly', (d) => isoWeek(d)],
  ['monthly', 'monthly', (d) => d.toISOString().slice(0, 7)],
  ['yearly', 'yearly', (d) => d.toISOString().slice(0, 4)],
];

/**
 * Which sets to keep and which to forget. The keep rules pick sets; then every set that a kept
 * set's chain needs (its `basedOn`, transitively), and the newest base of every component's
 * chain (what the next incremental or differential builds on), are kept too, with the reason.
 * A policy that keeps nothing at all is refused by the caller, not here.
 */
export function selectForget(entries: readonly CatalogEntry[], policy: ForgetPolicy): ForgetDecision {
  const newestFirst = [...entries].reverse();
  const reasons = new Map<CatalogEntry, string[]>();
  const keep: Keep = (entry, reason) => {
    const list = reasons.get(entry) ?? [];
    if (!list.includes(reason)) list.push(reason);
    reasons.set(entry, list);
  };
  keepByRules(entries, newestFirst, policy, keep);
  keepChainBases(newestFirst, keep);
  keepWhatKeptSetsNeed(entries, [...reasons.keys()], (entry) => reasons.has(entry), keep);
  return {
    keep: entries.filter((e) => reasons.has(e)).map((entry) => ({ entry, reasons: reasons.get(entry)! })),
    remove: entries.filter((e) => !reasons.has(e)),
  };
}

/** Records that `entry` stays, and why (each reason once). */
type Keep = (entry: CatalogEntry, reason: string) => void;

/** The policy's own rules: the newest N, the newest of each time bucket, and the tagged sets. */
function keepByRules(
  entries: readonly CatalogEntry[],
  newestFirst: readonly CatalogEntry[],
  policy: ForgetPolicy,
  keep: Keep,
): void {
  newestFirst.slice(0, policy.last ?? 0).forEach((e) => keep(e, 'last'));
  for (const [field, name, bucket] of BUCKETS) {
    const count = policy[field] as number | undefined;
    if (!count) continue;
    const seen = new Set<string>();
    for (const entry of newestFirst) {
      const key = bucket(new Date(entry.time));
      if (seen.has(key)) continue;
      if (seen.size >= count) break;
      seen.add(key);
      keep(entry, name);
    }
  }
  if (policy.tags?.length) {
    for (const entry of entries) if (entry.meta.tags.some((t) => policy.tags!.includes(t))) keep(entry, `tag`);
  }
}

/**
 * The newest chain bases stay: the next incremental (last full or incremental) and the next
 * differential (last full) of every component build on them.
 */
function keepChainBases(newestFirst: readonly CatalogEntry[], keep: Keep): void {
  const seenBase = new Set<string>();
  for (const entry of newestFirst) {
    for (const c of entry.meta.components) {
      if (!c.succeeded || c.stamp === null) continue;
      for (const kind of ['full', 'incremental'] as const) {
        const slot = `${kind}\0${c.writer}\0${c.component}`;
        const counts =
          kind === 'full' ? c.actualType === 'full' : c.actualType === 'full' || c.actualType === 'incremental';
        if (counts && !seenBase.has(slot)) {
          seenBase.add(slot);
          keep(entry, `chain base of ${c.writer}/${c.component}`);
        }
      }
    }
  }
}

/** A kept set keeps what it was based on, all the way down its chain. */
function keepWhatKeptSetsNeed(
  entries: readonly CatalogEntry[],
  kept: CatalogEntry[],
  isKept: (entry: CatalogEntry) => boolean,
  keep: Keep,
): void {
  const bySetId = new Map(entries.map((e) => [e.setId, e]));
  const queue = kept;
  while (queue.length > 0) {
    const entry = queue.pop()!;
    for (const c of entry.meta.components) {
      if (!c.basedOn) continue;
      const base = bySetId.get(c.basedOn);
      if (!base) continue;
      const had = isKept(base);
      keep(base, `needed by ${entry.setId} (${c.writer}/${c.component} ${c.actualType})`);
      if (!had) queue.push(base);
    }
  }
}

function isoWeek(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - day);
  const yearStart = new Date(Date.UTC(d.getUTCFullYear(), 0, 1));
  const week = Math.ceil(((d.getTime() - yearStart.getTime()) / 86_400_000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}
