import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { initRepository, openRepository } from './open.ts';
import { flipBlob, locate, PASSWORD, pseudoRandom, SMALL, storeFile, storeTwoSets } from './testing.ts';

/** Reads every file of a two-set fixture back through a fresh session: the bytes, or the error. */
async function readsBack(backend: MemoryBackend, ids: string[]): Promise<string[]> {
  const repo = await openRepository(backend, PASSWORD, { workers: 0 });
  try {
    const failed: string[] = [];
    for (const id of ids) await repo.loadBlob(id).catch(() => failed.push(id));
    return failed;
  } finally {
    await repo.close();
  }
}

describe('repair index', () => {
  test('rebuilds the index from the packs when every index object is damaged or gone', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    const { blobsOf } = await storeTwoSets(repo);
    await repo.close();
    const all = [...blobsOf.a, ...blobsOf.b, ...blobsOf.c];
    const indexes = backend.names('index');
    assert.ok(indexes.length >= 2, 'the fixture writes an index per manifest');
    const garbled = Buffer.from(backend.get('index', indexes[0]!));
    garbled[garbled.length >> 1]! ^= 1;
    backend.put('index', indexes[0]!, garbled);
    for (const name of indexes.slice(1)) await backend.remove('index', name);
    assert.ok((await readsBack(backend, all)).length > 0, 'the blobs are lost to the index');

    const warnings: string[] = [];
    const fresh = await openRepository(backend, PASSWORD, { workers: 0, onWarning: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    const report = await fresh.repairIndex();
    assert.equal(report.changed, true);
    assert.deepEqual(
      report.damagedIndexes.map((d) => d.name),
      [indexes[0]],
    );
    assert.equal(report.packsFromHeaders.length, backend.names('data').length);
    assert.deepEqual(report.packsUnreadable, []);
    assert.ok(!backend.names('index').includes(indexes[0]!), 'the damaged index object is removed');
    const check = await fresh.check({ readData: true });
    assert.deepEqual(check.problems, []);
    await fresh.close();
    assert.deepEqual(await readsBack(backend, all), []);

    const again = await openRepository(backend, PASSWORD, { workers: 0, onWarning: (m) => warnings.push(m) });
    assert.equal((await again.repairIndex()).changed, false, 'a sound index is left as it is');
    assert.equal(warnings.length, 1, 'no warning once repaired');
    await again.close();
  });

  test('crash-safe: a failure while removing the old index objects leaves a repository that checks clean', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    await storeTwoSets(repo);
    await repo.close();
    const [first] = backend.names('index');
    const bytes = Buffer.from(backend.get('index', first!));
    bytes[10]! ^= 1;
    backend.put('index', first!, bytes);
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const remove = backend.remove.bind(backend);
    backend.remove = async (type, name, options) => {
      if (type === 'index') throw new Error('power cut');
      return remove(type, name, options);
    };
    await assert.rejects(fresh.repairIndex(), /power cut/);
    backend.remove = remove;
    await fresh.close();
    const after = await openRepository(backend, PASSWORD, { workers: 0 });
    const check = await after.check({ readData: true });
    assert.deepEqual(
      check.problems.map((p) => p.kind),
      ['damaged-index'],
      'only the old damaged index, which the new one makes harmless',
    );
    assert.equal((await after.repairIndex()).changed, true);
    assert.deepEqual((await after.check({ readData: true })).problems, []);
    await after.close();
  });
});

describe('repair packs', () => {
  test('a flipped byte: the sound blobs move, the damaged one leaves the index and its files are named', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    const { blobsOf } = await storeTwoSets(repo);
    const target = blobsOf.b[0]!;
    const pack = await flipBlob(backend, repo, target);
    await repo.close();

    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const report = await fresh.repairPacks();
    assert.deepEqual(
      report.damagedPacks.map((d) => d.pack),
      [pack],
    );
    assert.deepEqual(
      report.dropped.map((d) => d.id),
      [target],
    );
    assert.deepEqual(report.dropped[0]!.usedBy.sort(), ['set-1:/sub/b.bin', 'set-2:/sub/b.bin']);
    assert.ok(!backend.names('data').includes(pack), 'the damaged pack is removed');
    assert.equal(fresh.hasBlob(target), false, 'the next backup stores it again');
    const others = [...blobsOf.a, ...blobsOf.b.slice(1), ...blobsOf.c];
    for (const id of others) await fresh.loadBlob(id);
    // Storing the lost content again makes the repository whole.
    await storeFile(fresh, 'b.bin', pseudoRandom(50_000, 'b'));
    await fresh.flush();
    assert.deepEqual((await fresh.check({ readData: true })).problems, []);
    await fresh.close();
  });

  test('a sound repository: nothing changes; a damaged index is refused until repair index', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, SMALL);
    const { blobsOf } = await storeTwoSets(repo);
    const before = backend.names('data').sort();
    const report = await repo.repairPacks();
    assert.deepEqual(report.damagedPacks, []);
    assert.deepEqual(backend.names('data').sort(), before);
    const { pack } = await locate(backend, repo, blobsOf.a[0]!);
    assert.ok(before.includes(pack));
    const [index] = backend.names('index');
    backend.put('index', index!, Buffer.from('garbage'));
    await assert.rejects(repo.repairPacks(), /run quiesce repair index first/);
    await repo.close();
  });
});
