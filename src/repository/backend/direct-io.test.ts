import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { alignedBuffer, DIRECT_ALIGN, openDirect, writeAt } from './direct-io.ts';
import { FsBackend } from './fs-backend.ts';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  // The system's temp directory: where its file system refuses O_DIRECT, the tests below say so.
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-direct-io-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Pages of `path` in the page cache, by util-linux's fincore; null where it is missing. */
function cachedPages(path: string): number | null {
  try {
    return Number(
      execFileSync('fincore', ['--raw', '--noheadings', '--output', 'PAGES', path], { encoding: 'utf8' }).trim(),
    );
  } catch {
    return null;
  }
}

function filled(buffer: Buffer): Buffer {
  buffer.set(randomBytes(buffer.length));
  return buffer;
}

test('writeAt writes aligned pieces directly and the rest buffered, and the file holds every byte in order', () =>
  withDir(async (dir) => {
    const path = join(dir, 'object');
    const buffered = await open(path, 'wx+');
    const direct = await openDirect(path);
    try {
      const pieces = [
        filled(alignedBuffer(256 * 1024)), // aligned memory, offset and length: direct
        filled(alignedBuffer(64 * 1024)).subarray(0, 10_000), // a tail that is not a whole block
        randomBytes(3 * DIRECT_ALIGN), // an unaligned offset: buffered
      ];
      let position = 0;
      for (const piece of pieces) {
        assert.equal(
          await writeAt(direct, buffered, piece, position),
          direct !== null,
          'nothing here makes direct writes fail',
        );
        position += piece.length;
      }
      assert.deepEqual(await readFile(path), Buffer.concat(pieces));
    } finally {
      await direct?.close();
      await buffered.close();
    }
  }));

test('memory the kernel will not write directly falls back to buffered writes, losing nothing', (t) =>
  withDir(async (dir) => {
    const path = join(dir, 'object');
    const buffered = await open(path, 'wx+');
    const direct = await openDirect(path);
    if (direct === null) {
      await buffered.close();
      t.skip(`the file system of ${tmpdir()} refuses O_DIRECT: every write is buffered, as the other test shows`);
      return;
    }
    try {
      // An odd address: no direct write can take it, whatever the device's block size.
      const misaligned = filled(Buffer.alloc(2 * DIRECT_ALIGN + 1)).subarray(1);
      assert.equal(await writeAt(direct, buffered, misaligned, 0), false, 'direct writes are given up for this file');
      assert.deepEqual(await readFile(path), misaligned);
    } finally {
      await direct.close();
      await buffered.close();
    }
  }));

test("a pack streamed into a local repository bypasses the page cache, so a backup does not evict the applications' cached pages", (t) =>
  withDir(async (dir) => {
    await mkdir(join(dir, 'repo'));
    const backend = new FsBackend(join(dir, 'repo'));
    const probe = join(dir, 'probe');
    await (await open(probe, 'w')).close();
    const probeDirect = await openDirect(probe);
    await probeDirect?.close();
    if (probeDirect === null) {
      t.skip(`the file system of ${tmpdir()} refuses O_DIRECT`);
      return;
    }
    if (cachedPages(probe) === null) {
      t.skip('fincore (util-linux-extra) is not installed: cannot see the page cache');
      return;
    }
    const segments = [filled(alignedBuffer(4 << 20)), filled(alignedBuffer(4 << 20))];
    const tail = randomBytes(777);
    const writer = await backend.createWriter('data');
    for (const segment of segments) await writer.write(segment);
    await writer.write(tail);
    const name = 'ab'.repeat(32);
    await writer.commit(name);
    const file = join(dir, 'repo', 'data', 'ab', name);
    const cached = cachedPages(file)!;
    // The buffered tail's page (and whatever the file system reads for itself) may be cached: not the segments.
    assert.ok(cached <= 4, `${cached} pages of an 8 MiB pack are in the page cache`);
    assert.deepEqual(await backend.load('data', name), Buffer.concat([...segments, tail]));

    // The same bytes written the ordinary way stay cached: the check above can tell the two apart.
    const plain = join(dir, 'plain');
    await writeFileThrough(plain, Buffer.concat([...segments, tail]));
    assert.ok(cachedPages(plain)! >= 2048, 'a buffered write leaves its pages in the cache');
  }));

async function writeFileThrough(path: string, data: Buffer): Promise<void> {
  const handle = await open(path, 'w');
  await handle.write(data);
  await handle.sync();
  await handle.close();
}

test('QUIESCE_NO_DIRECT_IO=1 turns direct writes off', () =>
  withDir(async (dir) => {
    const path = join(dir, 'object');
    await (await open(path, 'w')).close();
    const before = process.env.QUIESCE_NO_DIRECT_IO;
    process.env.QUIESCE_NO_DIRECT_IO = '1';
    try {
      assert.equal(await openDirect(path), null);
    } finally {
      if (before === undefined) delete process.env.QUIESCE_NO_DIRECT_IO;
      else process.env.QUIESCE_NO_DIRECT_IO = before;
    }
  }));
