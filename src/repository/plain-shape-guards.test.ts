import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { isPlainIndex, isPlainTree } from './plain-shape-guards.ts';
import { IndexFileSchema } from './index-file.ts';
import { TreeSchema } from './tree.ts';
import { serializeTree } from './tree-blob.ts';

const hex = (): string => randomBytes(32).toString('hex');

function validTree(): Record<string, unknown> {
  return {
    nodes: [
      { name: 'a dir', mode: 0o40755, uid: 0, gid: 0, mtimeNs: '1700000000123456789', type: 'dir', subtree: hex() },
      {
        name: 'b.txt',
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtimeNs: '-5',
        type: 'file',
        size: 3,
        content: [{ id: hex(), length: 3 }],
        hardlink: '2049:131',
      },
      { name: 'c fifo', mode: 0o10640, uid: 0, gid: 0, mtimeNs: '9', type: 'fifo' },
      { name: 'd null', mode: 0o20666, uid: 0, gid: 0, mtimeNs: '9', type: 'chardev', rdev: '259' },
      { name: 'e sda', mode: 0o60660, uid: 0, gid: 6, mtimeNs: '9', type: 'blockdev', rdev: '2048' },
      { name: 'empty', mode: 0o100600, uid: 1, gid: 2, mtimeNs: '0', type: 'file', size: 0, content: [] },
      { name: 'f sock', mode: 0o140755, uid: 0, gid: 0, mtimeNs: '9', type: 'socket' },
      { name: 'link', mode: 0o120777, uid: 0, gid: 0, mtimeNs: '7', type: 'symlink', target: '../b.txt' },
      {
        name: 'Ünïcødé ☃',
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtimeNs: '8',
        type: 'file',
        size: 5,
        content: [
          { id: hex(), length: 2 },
          { id: hex(), length: 3 },
        ],
      },
    ],
  };
}

function validIndex(): Record<string, unknown> {
  return {
    version: 1,
    packs: [
      {
        id: hex(),
        size: 1000,
        blobs: [
          { id: hex(), type: 'data', offset: 0, length: 40, rawLength: 12 },
          { id: hex(), type: 'tree', offset: 40, length: 50, rawLength: 0 },
        ],
      },
      { id: hex(), size: 77, blobs: [], unusedSince: '2026-12-01T00:00:00.000Z' },
    ],
  };
}

/** Every place in a JSON value where a mutation can go: [holder, key]. */
function places(value: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []): typeof out {
  if (typeof value !== 'object' || value === null) return out;
  for (const [k, v] of Object.entries(value)) {
    out.push([value as Record<string, unknown>, Array.isArray(value) ? Number(k) : k]);
    places(v, out);
  }
  return out;
}

const REPLACEMENTS: unknown[] = [
  undefined,
  null,
  '',
  '.',
  '..',
  'a/b',
  'x\0y',
  'z',
  'A'.repeat(64),
  'g'.repeat(64),
  '0'.repeat(63),
  '1e3',
  '-',
  '--1',
  'file',
  'dir',
  'fifo',
  'chardev',
  '1:2',
  ':2',
  '1:',
  '12',
  'tree',
  0,
  -0,
  -1,
  1.5,
  2 ** 53,
  2 ** 53 - 1,
  Number.MAX_VALUE,
  true,
  [],
  {},
  [1],
  { id: 'x' },
  'a'.repeat(4097),
];

/** A random change: a value replaced, a key removed or added, two nodes swapped. */
function mutate(value: Record<string, unknown>, random: () => number): void {
  const spots = places(value);
  if (spots.length === 0) return void (value['extra'] = 1);
  const [holder, key] = spots[Math.floor(random() * spots.length)]!;
  const pick = random();
  if (pick < 0.7) (holder as Record<string, unknown>)[key] = REPLACEMENTS[Math.floor(random() * REPLACEMENTS.length)];
  else if (pick < 0.8 && !Array.isArray(holder)) delete holder[key];
  else if (pick < 0.9 && !Array.isArray(holder)) holder['extra'] = 1;
  else if (Array.isArray(holder) && holder.length > 1) [holder[0], holder[1]] = [holder[1], holder[0]];
}

function seeded(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

test('the quick checks take valid trees and indexes as they are, so the common case skips the schemas', () => {
  const tree = validTree();
  assert.ok(isPlainTree(tree));
  assert.ok(isPlainTree({ nodes: [] }));
  assert.ok(isPlainIndex(validIndex()));
  // The stored form is the schema's, key order included, whichever path made it.
  const shuffled = {
    nodes: (tree.nodes as Record<string, unknown>[]).map((n) => Object.fromEntries(Object.entries(n).reverse())),
  };
  assert.equal(serializeTree(shuffled as never).toString(), JSON.stringify(TreeSchema.parse(tree)));
});

test('the quick checks never take what the schemas refuse or would give back changed (10,000 random mutations)', () => {
  const random = seeded(20261201);
  let refusedBySchema = 0;
  for (let round = 0; round < 10_000; round++) {
    const isTree = round % 2 === 0;
    const value = isTree ? validTree() : validIndex();
    const changes = 1 + Math.floor(random() * 3);
    for (let i = 0; i < changes; i++) mutate(value, random);
    const copy = structuredClone(value);
    const quick = isTree ? isPlainTree(value) : isPlainIndex(value);
    const schema = (isTree ? TreeSchema : IndexFileSchema).safeParse(copy);
    if (!schema.success) refusedBySchema++;
    if (quick) {
      assert.ok(schema.success, `the quick check took what the schema refuses: ${JSON.stringify(copy)}`);
      assert.deepEqual(schema.data, value, 'the schema would have given back something else');
    }
  }
  assert.ok(refusedBySchema > 5_000, `the mutations must mostly break the value (${refusedBySchema} refused)`);
});
