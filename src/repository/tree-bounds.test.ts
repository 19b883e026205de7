import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MAX_SET_ENTRIES,
  MAX_TREE_DEPTH,
  TreeMeasure,
  boundsProblem,
  sharedTrees,
  type TreeShape,
} from './tree-bounds.ts';

/** A DAG: t0 uses t1 twice, t1 uses t2 twice, … down to an empty t<levels>. */
function dag(levels: number): Map<string, TreeShape> {
  const shapes = new Map<string, TreeShape>();
  for (let i = 0; i < levels; i++) shapes.set(`t${i}`, { entries: 2, subtrees: [`t${i + 1}`, `t${i + 1}`] });
  shapes.set(`t${levels}`, { entries: 0, subtrees: [] });
  return shapes;
}

describe('tree bounds', () => {
  test('a DAG is measured per path, each tree loaded once, saturating past the bound', async () => {
    const shapes = dag(40);
    const loads: string[] = [];
    const measure = new TreeMeasure((id) => {
      loads.push(id);
      return shapes.get(id) ?? null;
    });
    assert.deepEqual(await measure.size('t30'), { entries: 2 ** 11 - 2, depth: 11 });
    const size = await measure.size('t0');
    assert.equal(size.entries, MAX_SET_ENTRIES + 1);
    assert.equal(size.depth, 41, 'levels of trees, the empty one at the bottom included');
    assert.equal(loads.length, 41, 'every tree once');
    assert.match(boundsProblem('set s', size)!, /more than 100,000,000 entries/);
  });

  test('a chain deeper than the bound is measured without recursion and named', async () => {
    const shapes = new Map<string, TreeShape>();
    for (let i = 0; i < 20_000; i++) shapes.set(`c${i}`, { entries: 1, subtrees: [`c${i + 1}`] });
    shapes.set('c20000', { entries: 1, subtrees: [] });
    const size = await new TreeMeasure((id) => shapes.get(id) ?? null).size('c0');
    assert.deepEqual(size, { entries: 20_001, depth: MAX_TREE_DEPTH + 1 });
    assert.match(boundsProblem('set s', size)!, /more than 4,096 levels/);
    assert.equal(boundsProblem('set s', { entries: 10, depth: 3 }), null);
  });

  test('a tree that cannot load counts as empty; one that contains itself is damage', async () => {
    assert.deepEqual(await new TreeMeasure(() => null).size('x'), { entries: 0, depth: 1 });
    const loop = new Map<string, TreeShape>([
      ['a', { entries: 1, subtrees: ['b'] }],
      ['b', { entries: 1, subtrees: ['a'] }],
    ]);
    await assert.rejects(new TreeMeasure((id) => loop.get(id) ?? null).size('a'), /contains itself/);
  });

  test('shared trees: how many paths reach each tree used more than once', () => {
    const shapes = dag(3);
    const shared = sharedTrees('t0', (id) => shapes.get(id)?.subtrees);
    assert.deepEqual(shared, [
      { id: 't3', paths: 8 },
      { id: 't2', paths: 4 },
      { id: 't1', paths: 2 },
    ]);
    const tree = new Map([
      ['root', ['x', 'y']],
      ['x', ['empty']],
      ['y', ['empty']],
    ]);
    assert.deepEqual(
      sharedTrees('root', (id) => tree.get(id)),
      [{ id: 'empty', paths: 2 }],
    );
    assert.deepEqual(
      sharedTrees('root', (id) => (id === 'root' ? ['x', 'y'] : undefined)),
      [],
    );
  });
});
