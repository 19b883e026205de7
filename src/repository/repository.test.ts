import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { initRepository, openRepository } from './open.ts';
import type { Tree } from './tree.ts';
import { PASSWORD, SMALL as OPTIONS, isCode, pseudoRandom } from './testing.ts';

describe('repository blobs', () => {
  for (const workers of [0, 2]) {
    test(`blobs round trip through packs (workers: ${workers})`, async () => {
      const backend = new MemoryBackend();
      const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, workers });
      try {
        const blobs = [pseudoRandom(40_000, 'a'), Buffer.alloc(50_000, 0x41), Buffer.alloc(0), pseudoRandom(10, 'b')];
        const saved = await Promise.all(blobs.map((b) => repo.saveBlob('data', b)));
        assert.ok(saved.every((s) => s.added && s.storedBytes > 0));
        assert.ok(saved[1]!.storedBytes < 1000, 'a run of one byte compresses');
        assert.ok(saved[0]!.storedBytes >= 40_000, 'random data is stored raw');
        // Readable before and after flush.
        for (const [i, blob] of blobs.entries()) assert.deepEqual(await repo.loadBlob(saved[i]!.id), blob);
        await repo.flush();
        assert.ok(backend.names('data').length >= 1);
        assert.equal(backend.names('index').length, 1);
        for (const [i, blob] of blobs.entries()) assert.deepEqual(await repo.loadBlob(saved[i]!.id), blob);
        const reopened = await openRepository(backend, PASSWORD, { workers: 0 });
        for (const [i, blob] of blobs.entries()) assert.deepEqual(await reopened.loadBlob(saved[i]!.id), blob);
        assert.equal(reopened.id, repo.id);
        await reopened.close();
      } finally {
        await repo.close();
      }
    });
  }

  test('saving the same blob twice deduplicates, even concurrently', async () => {
    const repo = await initRepository(new MemoryBackend(), PASSWORD, OPTIONS);
    const blob = pseudoRandom(20_000);
    const [a, b] = await Promise.all([repo.saveBlob('data', blob), repo.saveBlob('data', blob)]);
    assert.equal(a.id, b.id);
    assert.deepEqual([a.added, b.added].sort(), [false, true]);
    const c = await repo.saveBlob('data', blob);
    assert.deepEqual(c, { id: a.id, added: false, storedBytes: 0 });
    assert.equal(repo.blobId(blob), a.id);
    assert.ok(repo.hasBlob(a.id));
    await repo.close();
  });

  test('content saved as likely new is named on a worker: same ids, one copy however the saves meet, and it loads back', async () => {
    const repo = await initRepository(new MemoryBackend(), PASSWORD, { ...OPTIONS, workers: 1 });
    const blob = pseudoRandom(200_000, 'likely new');
    const other = pseudoRandom(200_000, 'other');
    const copy = () => Buffer.from(blob); // saves may move their plaintext to the worker
    const saves = await Promise.all([
      repo.saveBlob('data', copy(), { likelyNew: true }),
      repo.saveBlob('data', copy(), { likelyNew: true }),
      repo.saveBlob('data', copy()),
      repo.saveBlob('data', Buffer.from(other), { likelyNew: true }),
    ]);
    const id = repo.blobId(blob);
    assert.deepEqual(
      saves.slice(0, 3).map((s) => s.id),
      [id, id, id],
    );
    assert.equal(saves.slice(0, 3).filter((s) => s.added).length, 1, 'stored once');
    assert.ok(saves.slice(0, 3).every((s) => s.added === s.storedBytes > 0));
    assert.equal(saves[3].id, repo.blobId(other));
    assert.ok(saves[3].added);
    // A known blob saved as likely new again adds nothing.
    assert.deepEqual(await repo.saveBlob('data', copy(), { likelyNew: true }), { id, added: false, storedBytes: 0 });
    await repo.flush();
    assert.deepEqual(await repo.loadBlob(id), blob);
    assert.deepEqual(await repo.loadBlob(saves[3].id), other);
    const checked = await repo.check({ readData: true });
    assert.deepEqual(checked.problems, []);
    assert.ok(checked.ok);
    await repo.close();
  });

  test("loadBlob reads only the blob's byte range", async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, packSize: 1024 * 1024 });
    const ids: string[] = [];
    for (let i = 0; i < 20; i += 1) ids.push((await repo.saveBlob('data', pseudoRandom(20_000, `r${i}`))).id);
    await repo.flush();
    assert.equal(backend.names('data').length, 1);
    backend.bytesLoaded = 0;
    assert.deepEqual(await repo.loadBlob(ids[7]!), pseudoRandom(20_000, 'r7'));
    assert.ok(backend.bytesLoaded < 21_000, `loaded ${backend.bytesLoaded} bytes`);
    await repo.close();
  });

  test('packs first, index second: a pack per packSize, one index per flush', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    for (let i = 0; i < 10; i += 1) await repo.saveBlob('data', pseudoRandom(20_000, `p${i}`));
    assert.ok(backend.names('data').length >= 2, 'full packs are stored before flush');
    assert.equal(backend.names('index').length, 0, 'no index before flush');
    await repo.flush();
    assert.equal(backend.names('index').length, 1);
    await repo.flush();
    assert.equal(backend.names('index').length, 1, 'an empty flush writes nothing');
    await repo.close();
  });
});

describe('repository reads', () => {
  test('taking a lock reads the index again only when other runs changed it, and then sees their blobs', async () => {
    const backend = new MemoryBackend();
    const first = await initRepository(backend, PASSWORD, OPTIONS);
    const old = await first.saveBlob('data', pseudoRandom(5000, 'old'));
    await first.flush();
    const reader = await openRepository(backend, PASSWORD, OPTIONS);
    const loaded = backend.bytesLoaded;
    await (await reader.lock('shared')).release();
    const indexBytes = backend
      .names('index')
      .reduce((sum, name) => sum + backend.objects.get(`index/${name}`)!.length, 0);
    assert.ok(backend.bytesLoaded - loaded < indexBytes, 'an unchanged index is not read again');
    assert.ok(reader.hasBlob(old.id));
    // Another run stores a blob: the next lock reads the new index and knows it.
    const fresh = await first.saveBlob('data', pseudoRandom(5000, 'new'));
    await first.flush();
    assert.equal(reader.hasBlob(fresh.id), false);
    await (await reader.lock('shared')).release();
    assert.ok(reader.hasBlob(fresh.id), 'the blob another run stored is known after the lock');
    assert.ok(reader.hasBlob(old.id));
    await Promise.all([first.close(), reader.close()]);
  });

  test('loadBlobs reads blobs lying together in a pack with one ranged load; a damaged one fails alone', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, packSize: 1024 * 1024 });
    const blobs = Array.from({ length: 30 }, (_, i) => pseudoRandom(1000 + i * 100, `gather${i}`));
    const ids: string[] = [];
    for (const blob of blobs) ids.push((await repo.saveBlob('data', blob)).id);
    await repo.flush();
    await repo.close();
    const [pack] = backend.names('data');
    // One flipped byte amid the blobs.
    const bytes = Buffer.from(backend.get('data', pack!));
    bytes[20_000]! ^= 0x01;
    backend.put('data', pack!, bytes);
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    let loads = 0;
    const load = backend.load.bind(backend);
    backend.load = (...args) => (loads++, load(...args));
    const outcomes = await Promise.allSettled(
      [...fresh.loadBlobs([...ids, ids[0]!]).entries()].map(async ([id, loading]) => ({ id, data: await loading })),
    );
    assert.equal(loads, 1, 'one ranged load for thirty blobs');
    assert.equal(outcomes.length, 30, 'each blob once');
    const failed = outcomes.filter((o) => o.status === 'rejected');
    assert.equal(failed.length, 1, 'only the blob holding the flipped byte fails');
    assert.ok(isCode('damaged')((failed[0] as PromiseRejectedResult).reason));
    for (const outcome of outcomes) {
      if (outcome.status === 'fulfilled') assert.deepEqual(outcome.value.data, blobs[ids.indexOf(outcome.value.id)]);
    }
    await fresh.close();
  });

  test('trees are packed apart from data and read a pack at a time; a flipped byte in one is damaged naming tree and pack', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, packSize: 1024 * 1024 });
    const trees: { id: string; tree: Tree }[] = [];
    for (let i = 0; i < 20; i++) {
      const content = await repo.saveBlob('data', pseudoRandom(3000, `t${i}`));
      const tree: Tree = {
        nodes: [
          {
            name: `f${i}`,
            type: 'file',
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtimeNs: '1',
            size: 3000,
            content: [{ id: content.id, length: 3000 }],
          },
        ],
      };
      trees.push({ id: (await repo.saveTree(tree)).id, tree });
    }
    await repo.flush();
    assert.equal(backend.names('data').length, 2, 'one pack of data, one of trees');
    const [treePack, dataPack] = backend
      .names('data')
      .sort((a, b) => backend.get('data', a).length - backend.get('data', b).length) as [string, string];
    assert.ok(backend.get('data', dataPack).length > 60_000 && backend.get('data', treePack).length < 20_000);
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const before = backend.bytesLoaded;
    for (const { id, tree } of trees) assert.deepEqual(await fresh.loadTree(id), tree);
    assert.equal(
      backend.bytesLoaded - before,
      backend.get('data', treePack).length,
      'twenty trees, one read of their pack',
    );
    await fresh.close();

    // One flipped byte amid the pack's blobs: one tree is damaged, named with its pack; the others load.
    const bytes = Buffer.from(backend.get('data', treePack));
    const blobsEnd = bytes.length - 4 - bytes.readUInt32LE(bytes.length - 4);
    bytes[blobsEnd >> 1]! ^= 0x01;
    backend.put('data', treePack, bytes);
    const damaged = await openRepository(backend, PASSWORD, { workers: 0 });
    const outcomes = await Promise.allSettled(trees.map(({ id }) => damaged.loadTree(id)));
    const failed = outcomes.flatMap((o, i) =>
      o.status === 'rejected' ? [{ error: o.reason as unknown, id: trees[i]!.id }] : [],
    );
    assert.equal(failed.length, 1, 'exactly the tree holding the byte fails');
    assert.ok(
      isCode('damaged', failed[0]!.id)(failed[0]!.error) && (failed[0]!.error as Error).message.includes(treePack),
    );
    outcomes.forEach((o, i) => o.status === 'fulfilled' && assert.deepEqual(o.value, trees[i]!.tree));
    await damaged.close();
    await repo.close();
  });
});
