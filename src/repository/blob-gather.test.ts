import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gatherRuns } from './blob-gather.ts';

const KIB = 1024;
const MIB = 1024 * KIB;

function blob(offset: number, length: number): { offset: number; length: number } {
  return { offset, length };
}

test('gatherRuns reads neighbours as one range across gaps up to 64 KiB', () => {
  const blobs = [blob(0, 10 * KIB), blob(10 * KIB, 5 * KIB), blob(15 * KIB + 64 * KIB, 1 * KIB)];
  assert.deepEqual(gatherRuns(blobs), [blobs]);
});

test('gatherRuns starts a new range after a wider gap', () => {
  const blobs = [blob(0, KIB), blob(KIB + 64 * KIB + 1, KIB), blob(200 * KIB, KIB)];
  assert.deepEqual(gatherRuns(blobs), [[blobs[0]], [blobs[1]], [blobs[2]]]);
});

test('gatherRuns keeps every range within 8 MiB, and a blob longer than that alone', () => {
  const blobs = [blob(0, 3 * MIB), blob(3 * MIB, 3 * MIB), blob(6 * MIB, 3 * MIB), blob(9 * MIB, 9 * MIB)];
  assert.deepEqual(gatherRuns(blobs), [[blobs[0], blobs[1]], [blobs[2]], [blobs[3]]]);
  assert.deepEqual(gatherRuns([]), []);
});
