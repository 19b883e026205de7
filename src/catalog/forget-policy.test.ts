import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BackupType } from '../model/index.ts';
import type { CatalogEntry } from './catalog.ts';
import { selectForget } from './forget-policy.ts';

/** A set at `time` with one component of `type` based on `basedOn`. */
function set(
  id: string,
  time: string,
  type: BackupType,
  basedOn: string | null = null,
  tags: string[] = [],
): CatalogEntry {
  return {
    manifestId: `m-${id}`,
    setId: id,
    time,
    tree: '0'.repeat(64),
    meta: {
      kind: 'backup',
      hostname: 'h',
      tags,
      requestedType: type,
      status: 'succeeded',
      consistency: 'application',
      paths: [],
      writers: [],
      components: [
        {
          writer: 'db',
          component: 'db/db.sqlite',
          kind: 'database',
          requestedType: type,
          actualType: type,
          typeReason: null,
          consistency: 'application',
          succeeded: true,
          stamp: `stamp-${id}`,
          basedOn,
          files: ['/db.sqlite'],
        },
      ],
      report: {} as CatalogEntry['meta']['report'],
    },
  };
}

test('keep-last keeps the newest; a kept incremental keeps its whole chain down to the full', () => {
  const entries = [
    set('f1', '2026-11-01T00:00:00Z', 'full'),
    set('i1', '2026-11-02T00:00:00Z', 'incremental', 'f1'),
    set('f2', '2026-11-03T00:00:00Z', 'full'),
    set('i2', '2026-11-04T00:00:00Z', 'incremental', 'f2'),
    set('i3', '2026-11-05T00:00:00Z', 'incremental', 'i2'),
  ];
  const decision = selectForget(entries, { last: 1 });
  assert.deepEqual(
    decision.keep.map((k) => k.entry.setId),
    ['f2', 'i2', 'i3'],
  );
  assert.deepEqual(
    decision.remove.map((e) => e.setId),
    ['f1', 'i1'],
  );
  assert.match(decision.keep.find((k) => k.entry.setId === 'f2')!.reasons.join(';'), /needed by i2|chain base/);
});

test("a kept differential keeps its full; copies are never anybody's base", () => {
  const entries = [
    set('f1', '2026-11-01T00:00:00Z', 'full'),
    set('c1', '2026-11-02T00:00:00Z', 'copy'),
    set('d1', '2026-11-03T00:00:00Z', 'differential', 'f1'),
    set('c2', '2026-11-04T00:00:00Z', 'copy'),
  ];
  const decision = selectForget(entries, { last: 1 });
  assert.deepEqual(decision.keep.map((k) => k.entry.setId).sort(), ['c2', 'f1']);
  const withDiff = selectForget(entries, { tags: [], last: 2 });
  assert.deepEqual(withDiff.keep.map((k) => k.entry.setId).sort(), ['c2', 'd1', 'f1']);
  assert.deepEqual(
    withDiff.remove.map((e) => e.setId),
    ['c1'],
  );
});

test('daily buckets keep the newest of each day; tags keep their sets', () => {
  const entries = [
    set('a', '2026-11-01T08:00:00Z', 'copy', null, ['monthly']),
    set('b', '2026-11-01T20:00:00Z', 'copy'),
    set('c', '2026-11-02T08:00:00Z', 'copy'),
    set('d', '2026-11-02T20:00:00Z', 'copy'),
    set('e', '2026-11-03T08:00:00Z', 'copy'),
  ];
  const decision = selectForget(entries, { daily: 2, tags: ['monthly'] });
  assert.deepEqual(
    decision.keep.map((k) => k.entry.setId),
    ['a', 'd', 'e'],
  );
});
