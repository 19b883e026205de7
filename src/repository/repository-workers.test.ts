import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { FsBackend } from './backend/fs-backend.ts';
import { initRepository, openRepository } from './open.ts';
import { PASSWORD, SMALL as OPTIONS, pseudoRandom } from './testing.ts';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('repository memory and workers', () => {
  test('saveBlob waits for room: pending plaintext stays bounded', async () => {
    const repo = await initRepository(new MemoryBackend(), PASSWORD, {
      ...OPTIONS,
      workers: 2,
      maxPendingBytes: 100_000,
      packSize: 200_000,
    });
    const saves = Array.from({ length: 40 }, (_, i) => repo.saveBlob('data', pseudoRandom(30_000, `m${i}`)));
    const results = await Promise.all(saves);
    assert.equal(new Set(results.map((r) => r.id)).size, 40);
    await repo.flush();
    await repo.close();
  });

  test('a fresh process reads what another flushed (FsBackend, worker threads, no close)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-repo-'));
    dirs.push(dir);
    const backend = await FsBackend.create(join(dir, 'repo'));
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, workers: 2 });
    const blob = pseudoRandom(100_000, 'fresh');
    const saved = await repo.saveBlob('data', blob);
    await repo.flush();
    await repo.close();
    // The child writes a blob too, never calls close: its workers must not keep it alive.
    const script = `
      import { FsBackend } from ${JSON.stringify(new URL('./backend/fs-backend.ts', import.meta.url).href)};
      import { openRepository } from ${JSON.stringify(new URL('./open.ts', import.meta.url).href)};
      const repo = await openRepository(new FsBackend(${JSON.stringify(join(dir, 'repo'))}), ${JSON.stringify(PASSWORD)}, { workers: 2 });
      const blob = await repo.loadBlob(${JSON.stringify(saved.id)});
      const mine = await repo.saveBlob('data', Buffer.from('from the child'));
      await repo.flush();
      process.stdout.write(JSON.stringify({ sha: (await import('node:crypto')).createHash('sha256').update(blob).digest('hex'), id: mine.id }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { timeout: 30_000 },
    );
    const answer = JSON.parse(stdout) as { sha: string; id: string };
    assert.equal(answer.sha, createHash('sha256').update(blob).digest('hex'));
    const again = await openRepository(new FsBackend(join(dir, 'repo')), PASSWORD, { workers: 0 });
    assert.deepEqual(await again.loadBlob(answer.id), Buffer.from('from the child'));
    await again.close();
  });

  test('packs are written to their file as they fill (FsBackend): blobs read back before and after, and an unfinished pack leaves nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-repo-'));
    dirs.push(dir);
    const backend = await FsBackend.create(join(dir, 'repo'));
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, workers: 0, packSize: 12 * 1024 * 1024 });
    // Random blobs of 0.9–1.5 MB: some straddle the 4 MiB segments a streamed pack writes out.
    const blobs = Array.from({ length: 12 }, (_, i) => pseudoRandom(900_000 + i * 50_000, `stream${i}`));
    const saved = [];
    for (const blob of blobs) saved.push(await repo.saveBlob('data', blob));
    for (const [i, blob] of blobs.entries())
      assert.deepEqual(await repo.loadBlob(saved[i]!.id), blob, `blob ${i} read back before its pack is stored`);
    await repo.flush();
    for (const [i, blob] of blobs.entries()) assert.deepEqual(await repo.loadBlob(saved[i]!.id), blob);
    const reopened = await openRepository(new FsBackend(join(dir, 'repo')), PASSWORD, { workers: 0 });
    for (const [i, blob] of blobs.entries()) assert.deepEqual(await reopened.loadBlob(saved[i]!.id), blob);
    const checked = await reopened.check({ readData: true });
    assert.ok(checked.ok && checked.packs >= 2, JSON.stringify(checked.problems));
    await reopened.close();
    // A pack still filling when the repository closes (a failed backup) leaves no file behind.
    await repo.saveBlob('data', pseudoRandom(5_000_000, 'unfinished'));
    await repo.close();
    const leftovers = (await readdir(join(dir, 'repo', 'data'), { recursive: true })).filter((name) =>
      basename(name).startsWith('.tmp-'),
    );
    assert.deepEqual(leftovers, []);
  });
});

describe('small files and chunks', () => {
  for (const workers of [0, 2]) {
    test(`small files stored whole are the blobs the chunker path stores, and what cannot be read says why (workers: ${workers})`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'quiesce-small-'));
      dirs.push(dir);
      const contents = [
        pseudoRandom(1, 'one'),
        pseudoRandom(2048, 'at the minimum'),
        Buffer.alloc(1500, 0x61),
        pseudoRandom(700, 'twin'),
        pseudoRandom(700, 'twin'),
      ];
      const files = await Promise.all(
        contents.map(async (content, i) => {
          const path = join(dir, `f${i}`);
          await writeFile(path, content);
          return { path, size: content.length };
        }),
      );
      const repo = await initRepository(await FsBackend.create(join(dir, 'repo')), PASSWORD, { ...OPTIONS, workers });
      try {
        const results = await repo.saveSmallFiles([
          ...files,
          { path: join(dir, 'missing'), size: 10 },
          { path: files[0]!.path, size: 2 },
        ]);
        assert.equal(results.length, 7);
        for (const [i, content] of contents.entries()) {
          const saved = results[i]!;
          assert.ok(!('error' in saved), JSON.stringify(saved));
          // The same id as the content saved through the chunker's path: they deduplicate.
          assert.equal(saved.id, repo.blobId(content));
          assert.deepEqual(await repo.loadBlob(saved.id), content);
        }
        const twins = [results[3], results[4]] as { added: boolean }[];
        assert.deepEqual(
          twins.map((r) => r.added).sort(),
          [false, true],
          'of two equal files (read at once, in either order), one is stored',
        );
        assert.equal((results[5] as { code: string }).code, 'ENOENT');
        assert.equal(
          (results[6] as { code: string }).code,
          'CHANGED',
          'a file read at another size than listed is refused',
        );
        assert.equal((await repo.saveBlob('data', contents[2]!)).added, false);
        await repo.flush();
        const reopened = await openRepository(new FsBackend(join(dir, 'repo')), PASSWORD, { workers: 0 });
        for (const content of contents) assert.deepEqual(await reopened.loadBlob(reopened.blobId(content)), content);
        await reopened.close();
        await assert.rejects(
          repo.saveSmallFiles([{ path: files[0]!.path, size: 4096 }]),
          RangeError,
          'a file longer than one chunk is refused',
        );
      } finally {
        await repo.close();
      }
    });
  }

  test('a chunk moves to an encoding worker without a copy, and comes back as the same data', async () => {
    // Chunks of 16 KiB and more go to the workers; smaller blobs are sealed on the calling thread.
    const repo = await initRepository(new MemoryBackend(), PASSWORD, {
      ...OPTIONS,
      workers: 2,
      chunker: { minSize: 16384, avgSize: 32768, maxSize: 65536 },
    });
    try {
      const data = pseudoRandom(600_000, 'moved');
      const chunker = repo.createChunker();
      const chunks = [...chunker.update(data), ...chunker.finish()];
      const copies = chunks.map((c) => Buffer.from(c));
      const saved = await Promise.all(chunks.map((c) => repo.saveBlob('data', c)));
      // Moved to the workers: the chunks read as empty here now (the caller must not use them).
      assert.ok(chunks.some((c) => c.length === 0));
      for (const [i, copy] of copies.entries()) assert.deepEqual(await repo.loadBlob(saved[i]!.id), copy);
      // Chunked again, into recycled buffers: the same chunks.
      const again = repo.createChunker();
      const second = [...again.update(data), ...again.finish()].map((c) => Buffer.from(c));
      assert.deepEqual(second, copies);
    } finally {
      await repo.close();
    }
  });

  test('the chunker is keyed by the repository', async () => {
    const a = await initRepository(new MemoryBackend(), PASSWORD, OPTIONS);
    const b = await initRepository(new MemoryBackend(), PASSWORD, OPTIONS);
    const data = pseudoRandom(300_000);
    const sizes = (repo: typeof a) => {
      const chunker = repo.createChunker();
      return [...chunker.update(data), ...chunker.finish()].map((c) => c.length);
    };
    assert.deepEqual(sizes(a), sizes(a));
    assert.notDeepEqual(sizes(a), sizes(b));
    assert.ok(sizes(a).every((s) => s <= 32768));
    await Promise.all([a.close(), b.close()]);
  });
});
