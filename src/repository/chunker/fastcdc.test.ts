import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { FastCdcChunker, type ChunkerParams } from './fastcdc.ts';

const params: ChunkerParams = { minSize: 2048, avgSize: 8192, maxSize: 32768 };
const seed = Buffer.alloc(32, 7);

/** A deterministic pseudo-random buffer (so a failure reproduces). */
function pseudoRandom(length: number, salt = 'data'): Buffer {
  const out = Buffer.alloc(length);
  let counter = 0;
  for (let at = 0; at < length; at += 32) {
    createHash('sha256').update(`${salt}:${counter++}`).digest().copy(out, at);
  }
  return out;
}

function chunkAll(data: Uint8Array, splits: number[], chunkerSeed: Uint8Array = seed): Uint8Array[] {
  const chunker = new FastCdcChunker(chunkerSeed, params);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const split of [...splits, data.length]) {
    out.push(...chunker.update(data.subarray(at, split)));
    at = split;
  }
  out.push(...chunker.finish());
  return out;
}

const hashes = (chunks: Uint8Array[]): string[] => chunks.map((c) => createHash('sha256').update(c).digest('hex'));

describe('FastCDC chunker', () => {
  const data = pseudoRandom(1_000_000);

  test('chunks cover the input and stay within bounds', () => {
    const chunks = chunkAll(data, []);
    assert.deepEqual(Buffer.concat(chunks), data);
    chunks.forEach((c, i) => {
      assert.ok(c.length <= params.maxSize, `chunk ${i} is ${c.length}`);
      if (i < chunks.length - 1) assert.ok(c.length >= params.minSize, `chunk ${i} is ${c.length}`);
    });
    const mean = data.length / chunks.length;
    assert.ok(mean > params.minSize * 2 && mean < params.maxSize / 2, `mean chunk size ${mean}`);
  });

  test('the same chunks whatever the update splits', () => {
    const reference = hashes(chunkAll(data, []));
    for (let round = 0; round < 20; round += 1) {
      const count = 1 + (randomBytes(1)[0]! % 40);
      const splits = Array.from({ length: count }, () => randomBytes(4).readUInt32LE() % data.length).sort(
        (a, b) => a - b,
      );
      assert.deepEqual(hashes(chunkAll(data, splits)), reference, `splits ${splits.join(',')}`);
    }
    // Tiny pieces, one byte at a time near a boundary region.
    const small = data.subarray(0, 60_000);
    const splits = Array.from({ length: 5000 }, (_, i) => i * 7);
    assert.deepEqual(hashes(chunkAll(small, splits)), hashes(chunkAll(small, [])));
  });

  test('the input buffer may be reused after update', () => {
    const chunker = new FastCdcChunker(seed, params);
    const buffer = Buffer.alloc(10_000);
    const out: Uint8Array[] = [];
    for (let at = 0; at < data.length; at += buffer.length) {
      const piece = data.subarray(at, at + buffer.length);
      piece.copy(buffer);
      out.push(...chunker.update(buffer.subarray(0, piece.length)));
      buffer.fill(0xee);
    }
    out.push(...chunker.finish());
    assert.deepEqual(hashes(out), hashes(chunkAll(data, [])));
  });

  test('an insertion early in the data changes only the chunks around it', () => {
    const before = hashes(chunkAll(data, []));
    const edited = Buffer.concat([data.subarray(0, 5000), Buffer.from('inserted bytes!'), data.subarray(5000)]);
    const after = hashes(chunkAll(edited, []));
    const kept = new Set(before);
    const changed = after.filter((h) => !kept.has(h)).length;
    assert.ok(changed <= 2, `${changed} of ${after.length} chunks changed`);
  });

  test('different seeds give different boundaries', () => {
    const a = chunkAll(data, []).map((c) => c.length);
    const b = chunkAll(data, [], Buffer.alloc(32, 8)).map((c) => c.length);
    assert.notDeepEqual(a, b);
  });

  test('empty input gives no chunk; short input gives one', () => {
    assert.deepEqual(chunkAll(new Uint8Array(0), []), []);
    const short = pseudoRandom(100);
    assert.deepEqual(
      chunkAll(short, []).map((c) => Buffer.from(c)),
      [short],
    );
  });

  test('runs of zeros are cut at the maximum size', () => {
    const zeros = new Uint8Array(100_000);
    const sizes = chunkAll(zeros, []).map((c) => c.length);
    assert.ok(sizes.slice(0, -1).every((s) => s === params.maxSize || s >= params.minSize));
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      zeros.length,
    );
  });
});
