import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferPool } from './buffer-pool.ts';

test('a buffer pool hands its buffers out again, and never one it did not make', () => {
  const pool = new BufferPool(2);
  const a = pool.take(1000);
  assert.equal(a.length, 1000);
  assert.equal(a.buffer.byteLength, 1024 * 1024, 'rounded up to a whole MiB');
  pool.give(a);
  const b = pool.take(5000);
  assert.equal(b.buffer, a.buffer, 'the same memory serves the next take');
  // Memory it did not make (a caller's read buffer) is never handed out.
  const foreign = new Uint8Array(1024 * 1024);
  pool.give(foreign);
  assert.notEqual(pool.take(10).buffer, foreign.buffer);
  // A buffer that came back from a worker (a new object for the same memory) is adopted.
  const returned = new ArrayBuffer(2 * 1024 * 1024);
  pool.adopt(returned);
  assert.ok(pool.owns(returned));
  assert.equal(pool.takeBuffer(1_500_000), returned);
  // It keeps at most `keep` spare buffers.
  const many = [pool.take(1), pool.take(1), pool.take(1)];
  for (const buffer of many) pool.give(buffer);
  const again = [pool.take(1), pool.take(1), pool.take(1)];
  assert.equal(again.filter((x) => many.some((m) => m.buffer === x.buffer)).length, 2);
});
