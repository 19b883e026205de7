import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ByteRange } from '../model/index.ts';
import type { ContentRef } from '../repository/index.ts';
import { splicePlan, type SpliceStep } from './splice-plan.ts';

// Three base chunks of ten bytes: a [0, 10), b [10, 20), c [20, 30).
const a: ContentRef = { id: 'a', length: 10 };
const b: ContentRef = { id: 'b', length: 10 };
const c: ContentRef = { id: 'c', length: 10 };
const base = [a, b, c];

const keep = (ref: ContentRef): SpliceStep => ({ kind: 'keep', ref });
const read = (offset: number, length: number): SpliceStep => ({ kind: 'read', offset, length });
const plan = (size: number, ...ranges: [number, number][]) =>
  splicePlan(
    base,
    size,
    ranges.map(([offset, length]): ByteRange => ({ offset, length })),
  );

describe('splicePlan, same size', () => {
  test('no changed range keeps every chunk', () => {
    assert.deepEqual(plan(30), [keep(a), keep(b), keep(c)]);
  });
  test('a range inside one chunk re-reads that chunk only', () => {
    assert.deepEqual(plan(30, [12, 3]), [keep(a), read(10, 10), keep(c)]);
  });
  test('a range exactly one chunk long does not touch its neighbours', () => {
    assert.deepEqual(plan(30, [10, 10]), [keep(a), read(10, 10), keep(c)]);
  });
  test('a range across a boundary re-reads both chunks as one span', () => {
    assert.deepEqual(plan(30, [8, 4]), [read(0, 20), keep(c)]);
  });
  test('a range at the start', () => {
    assert.deepEqual(plan(30, [0, 1]), [read(0, 10), keep(b), keep(c)]);
  });
  test('a range at the end', () => {
    assert.deepEqual(plan(30, [29, 1]), [keep(a), keep(b), read(20, 10)]);
  });
  test('ranges in neighbouring chunks merge into one span; apart, they stay apart', () => {
    assert.deepEqual(plan(30, [5, 1], [15, 1]), [read(0, 20), keep(c)]);
    assert.deepEqual(plan(30, [5, 1], [25, 1]), [read(0, 10), keep(b), read(20, 10)]);
    assert.deepEqual(plan(30, [0, 30]), [read(0, 30)]);
  });
  test('a range past the end changes nothing', () => {
    assert.deepEqual(plan(30, [40, 5]), [keep(a), keep(b), keep(c)]);
  });
});

describe('splicePlan, grown or shrunk', () => {
  test('a grown file keeps its chunks and reads what it grew by', () => {
    assert.deepEqual(plan(35), [keep(a), keep(b), keep(c), read(30, 5)]);
  });
  test('a change in the last chunk of a grown file is read up to the old end, then the growth', () => {
    assert.deepEqual(plan(35, [28, 7]), [keep(a), keep(b), read(20, 10), read(30, 5)]);
  });
  test('a chunk the new size cuts short is re-read up to the new end', () => {
    assert.deepEqual(plan(25), [keep(a), keep(b), read(20, 5)]);
  });
  test('a file shrunk to a boundary drops the chunks past it', () => {
    assert.deepEqual(plan(20), [keep(a), keep(b)]);
  });
  test('a file shrunk into its first chunk re-reads what is left of it', () => {
    assert.deepEqual(plan(5), [read(0, 5)]);
    assert.deepEqual(plan(0), []);
  });
  test('an empty base is read whole', () => {
    assert.deepEqual(splicePlan([], 12, []), [read(0, 12)]);
    assert.deepEqual(splicePlan([], 0, []), []);
  });
});
