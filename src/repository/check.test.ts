import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { flipBlob, locate, PASSWORD, pseudoRandom, SMALL, storeTwoSets } from './testing.ts';
import { initRepository, openRepository } from './open.ts';

describe('check', () => {
  test('a sound repository checks ok, with and without reading the data', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    await storeTwoSets(repo);
    const quick = await repo.check();
    assert.deepEqual(quick.problems, []);
    assert.equal(quick.ok, true);
    assert.equal(quick.manifests, 2);
    assert.equal(quick.trees, 3);
    const progress: number[] = [];
    const full = await repo.check({ readData: true, onProgress: (done) => progress.push(done) });
    assert.deepEqual(full.problems, []);
    assert.equal(full.packs, backend.names('data').length);
    assert.ok(full.bytesRead > 180_000, `read ${full.bytesRead}`);
    assert.equal(progress.at(-1), full.packs);
    await repo.close();
  });

  test('one flipped byte: check --read-data names the damaged blob and the files that use it', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    const { blobsOf } = await storeTwoSets(repo);
    const target = blobsOf.b[0]!;
    const pack = await flipBlob(backend, repo, target);
    await repo.close();

    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const quick = await fresh.check();
    assert.equal(quick.ok, true, 'structure alone does not read data blobs');
    const report = await fresh.check({ readData: true });
    assert.equal(report.ok, false);
    const damaged = report.problems.filter((p) => p.kind === 'damaged-blob');
    assert.equal(damaged.length, 1, JSON.stringify(report.problems));
    assert.equal(damaged[0]!.object, target);
    assert.ok(damaged[0]!.message.includes(pack), damaged[0]!.message);
    assert.deepEqual(damaged[0]!.files?.sort(), ['set-1:/sub/b.bin', 'set-2:/sub/b.bin']);
    assert.ok(
      report.problems.some((p) => p.kind === 'damaged-pack' && p.object === pack),
      'the pack no longer hashes to its name',
    );
    await fresh.close();
  });

  test('an unreferenced pack (a crashed backup) is reported but is not damage', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    await storeTwoSets(repo);
    await repo.saveBlob('data', pseudoRandom(70_000, 'orphan')); // fills a pack, never indexed
    await repo.close();
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const report = await fresh.check();
    assert.equal(report.problems.filter((p) => p.kind === 'unreferenced-pack').length, 1);
    assert.equal(report.ok, true);
    await fresh.close();
  });

  test('a missing pack, a damaged index and a damaged manifest are damage', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    const { manifests, blobsOf } = await storeTwoSets(repo);
    const where = await locate(backend, repo, blobsOf.c[0]!);
    await repo.close();
    backend.objects.delete(`data/${where.pack}`);
    backend.put('manifests', manifests[0], Buffer.from('garbage'));
    backend.put('index', 'e'.repeat(64), Buffer.from('not an index'));
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const report = await fresh.check();
    assert.equal(report.ok, false);
    const kinds = new Set(report.problems.map((p) => p.kind));
    for (const kind of ['missing-pack', 'damaged-manifest', 'damaged-index', 'missing-blob'] as const)
      assert.ok(kinds.has(kind), [...kinds].join());
    const missing = report.problems.find((p) => p.kind === 'missing-blob' && p.object === blobsOf.c[0]);
    assert.deepEqual(missing?.files, ['set-2:/c.bin']);
    await fresh.close();
  });
});
