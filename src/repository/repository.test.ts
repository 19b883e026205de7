import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { QuiesceError } from '../model/failure.ts';
import { MemoryBackend } from './backend/memory-backend.ts';
import { FsBackend } from './backend/fs-backend.ts';
import { initRepository, openRepository, type InitRepositoryOptions } from './open.ts';
import type { Tree } from './tree.ts';

const PASSWORD = 'open sesame';
const OPTIONS: InitRepositoryOptions = {
  kdf: { N: 1024, r: 8, p: 1 },
  chunker: { minSize: 2048, avgSize: 8192, maxSize: 32768 },
  packSize: 64 * 1024,
  workers: 0,
};

function pseudoRandom(length: number, salt = 'data'): Buffer {
  const out = Buffer.alloc(length);
  let counter = 0;
  for (let at = 0; at < length; at += 32) createHash('sha256').update(`${salt}:${counter++}`).digest().copy(out, at);
  return out;
}

function isCode(code: string, includes?: string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof QuiesceError, `expected a QuiesceError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (includes !== undefined) assert.ok(error.message.includes(includes), error.message);
    return true;
  };
}

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('repository', () => {
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

  test('trees and manifests round trip; manifests list and remove', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    const content = await repo.saveBlob('data', Buffer.from('file content'));
    const tree: Tree = {
      nodes: [
        {
          name: 'a.txt',
          type: 'file',
          mode: 0o644,
          uid: 0,
          gid: 0,
          mtimeNs: '1',
          size: 12,
          content: [{ id: content.id, length: 12 }],
        },
      ],
    };
    const saved = await repo.saveTree(tree);
    assert.equal((await repo.saveTree(structuredClone(tree))).added, false, 'equal trees deduplicate');
    assert.deepEqual(await repo.loadTree(saved.id), tree);
    await assert.rejects(repo.loadTree(content.id), isCode('damaged', 'tree'));
    await assert.rejects(repo.saveTree({ nodes: [tree.nodes[0]!, tree.nodes[0]!] }));
    await assert.rejects(
      repo.saveManifest({ version: 1, setId: 's0', time: 't', tree: 'f'.repeat(64), meta: null }),
      isCode('nonretryable', 'not in the repository'),
    );
    const name = await repo.saveManifest({
      version: 1,
      setId: 'set-1',
      time: '2026-11-22T00:00:00Z',
      tree: saved.id,
      meta: { note: 'hi' },
    });
    assert.ok(backend.names('index').length === 1, 'saveManifest flushed');
    assert.deepEqual(await repo.listManifests(), [name]);
    assert.deepEqual(await repo.loadManifest(name), {
      version: 1,
      setId: 'set-1',
      time: '2026-11-22T00:00:00Z',
      tree: saved.id,
      meta: { note: 'hi' },
    });
    await repo.removeManifest(name);
    assert.deepEqual(await repo.listManifests(), []);
    await repo.close();
  });

  test('a wrong password is wrong-password; a second password opens too', async () => {
    const backend = new MemoryBackend('memory:pw');
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    const saved = await repo.saveBlob('data', Buffer.from('secret'));
    await repo.flush();
    await repo.addPassword('second password');
    await repo.close();
    await assert.rejects(
      openRepository(backend, 'nope'),
      isCode('wrong-password', 'the password does not open any key of the repository at memory:pw'),
    );
    for (const password of [PASSWORD, 'second password']) {
      const again = await openRepository(backend, password, { workers: 0 });
      assert.deepEqual(await again.loadBlob(saved.id), Buffer.from('secret'));
      await again.close();
    }
    assert.equal(backend.names('keys').length, 2);
  });

  test('keys list and remove: the key in use stays, another goes and its password no longer opens', async () => {
    const backend = new MemoryBackend('memory:keys');
    const first = await initRepository(backend, PASSWORD, OPTIONS);
    const secondId = await first.addPassword('second password');
    const keys = await first.listKeys();
    assert.equal(keys.length, 2);
    assert.deepEqual(keys.filter((k) => k.current).map((k) => k.id).length, 1);
    assert.ok(keys.every((k) => k.created !== null && k.hostname !== null));
    assert.equal(keys.find((k) => !k.current)!.id, secondId);
    // The key this session opened with is refused, by id or by prefix; an unknown id says so.
    const current = keys.find((k) => k.current)!.id;
    await assert.rejects(first.removeKey(current), isCode('bad-usage', 'another password'));
    await assert.rejects(first.removeKey(current.slice(0, 10)), isCode('bad-usage', 'another password'));
    await assert.rejects(first.removeKey('f'.repeat(64)), isCode('bad-usage', 'no key'));
    await assert.rejects(
      first.removeKey('abc'),
      isCode('bad-usage', 'no key'),
      'a prefix shorter than 8 characters is not taken',
    );
    // A session opened with the second password removes the first's key...
    const second = await openRepository(backend, 'second password', { workers: 0 });
    assert.equal(await second.removeKey(current.slice(0, 8)), current);
    await assert.rejects(openRepository(backend, PASSWORD), isCode('wrong-password'));
    // ...and the first session, whose key is gone, removes nothing more: one key always opens.
    await assert.rejects(first.removeKey(secondId), isCode('bad-usage', 'no longer'));
    assert.deepEqual(backend.names('keys'), [secondId]);
    await Promise.all([first.close(), second.close()]);
  });

  test('no config, a truncated or a foreign config is not-a-repository; a newer format is unsupported-version', async () => {
    await assert.rejects(
      openRepository(new MemoryBackend('memory:empty'), PASSWORD),
      isCode('not-a-repository', 'no quiesce repository at memory:empty: run quiesce init'),
    );
    const backend = new MemoryBackend();
    await (await initRepository(backend, PASSWORD, OPTIONS)).close();
    const config = backend.get('config', 'config');
    backend.put('config', 'config', config.subarray(0, config.length - 10));
    await assert.rejects(openRepository(backend, PASSWORD), isCode('not-a-repository'));
    backend.put('config', 'config', Buffer.from('{"version":1,"chunker_polynomial":"3da3358b4dc173"}'));
    await assert.rejects(openRepository(backend, PASSWORD), isCode('not-a-repository'));
    const newer = Buffer.from(config);
    newer[4] = 2;
    backend.put('config', 'config', newer);
    await assert.rejects(openRepository(backend, PASSWORD), isCode('unsupported-version'));
    backend.put('config', 'config', config);
    await (await openRepository(backend, PASSWORD)).close();
  });

  test('a missing directory is not-a-repository', async () => {
    await assert.rejects(
      openRepository(new FsBackend(join(tmpdir(), `quiesce-none-${process.pid}-${Date.now()}`)), PASSWORD),
      isCode('not-a-repository', 'run quiesce init'),
    );
  });

  test('a cancelled call stores nothing', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    const before = [...backend.objects.keys()].sort();
    await assert.rejects(repo.saveBlob('data', Buffer.from('x'), { signal: AbortSignal.abort() }));
    await repo.flush();
    assert.deepEqual([...backend.objects.keys()].sort(), before);
    await repo.close();
    await assert.rejects(repo.saveBlob('data', Buffer.from('x')), isCode('bad-usage', 'closed'));
  });

  test('init refuses a location that has a repository', async () => {
    const backend = new MemoryBackend();
    await (await initRepository(backend, PASSWORD, OPTIONS)).close();
    await assert.rejects(initRepository(backend, PASSWORD, OPTIONS), isCode('bad-usage', 'already a repository'));
  });

  test('a key left by a crashed init with the same password does not confuse open', async () => {
    const backend = new MemoryBackend();
    await (await initRepository(backend, PASSWORD, OPTIONS)).close();
    const stray = new MemoryBackend();
    await (await initRepository(stray, PASSWORD, OPTIONS)).close();
    for (const name of stray.names('keys')) backend.put('keys', name, stray.get('keys', name));
    for (let i = 0; i < 3; i += 1) await (await openRepository(backend, PASSWORD)).close();
  });

  test('one flipped byte in a pack: loadBlob throws damaged naming blob and pack', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, packSize: 1024 * 1024 });
    const a = await repo.saveBlob('data', pseudoRandom(10_000, 'a'));
    const b = await repo.saveBlob('data', pseudoRandom(10_000, 'b'));
    await repo.flush();
    const [pack] = backend.names('data');
    const bytes = Buffer.from(backend.get('data', pack!));
    bytes[15_000]! ^= 0x01; // inside the second blob
    backend.put('data', pack!, bytes);
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    assert.deepEqual(await fresh.loadBlob(a.id), pseudoRandom(10_000, 'a'));
    await assert.rejects(
      fresh.loadBlob(b.id),
      (e: unknown) => isCode('damaged', b.id)(e) && (e as Error).message.includes(pack!),
    );
    await assert.rejects(fresh.loadBlob('0'.repeat(64)), isCode('damaged', 'not in the repository'));
    await fresh.close();
    await repo.close();
  });

  test('large blobs are opened on the workers: they round trip, and a flipped byte is damaged naming blob and pack', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, { ...OPTIONS, packSize: 4 * 1024 * 1024, workers: 2 });
    const blobs = [pseudoRandom(300_000, 'raw'), Buffer.alloc(200_000, 0x42), pseudoRandom(100_000, 'other')];
    const saved: { id: string }[] = [];
    for (const blob of blobs) saved.push(await repo.saveBlob('data', blob)); // one after another: the first is first in the pack
    await repo.flush();
    const fresh = await openRepository(backend, PASSWORD, { workers: 2 });
    for (const [i, blob] of blobs.entries()) assert.deepEqual(await fresh.loadBlob(saved[i]!.id), blob);
    const [pack] = backend.names('data');
    const bytes = Buffer.from(backend.get('data', pack!));
    bytes[150_000]! ^= 0x01; // inside the first blob (stored raw: random data does not compress)
    backend.put('data', pack!, bytes);
    const damaged = await openRepository(backend, PASSWORD, { workers: 2 });
    await assert.rejects(
      damaged.loadBlob(saved[0]!.id),
      (e: unknown) => isCode('damaged', saved[0]!.id)(e) && (e as Error).message.includes(pack!),
    );
    assert.deepEqual(await damaged.loadBlob(saved[1]!.id), blobs[1]);
    await Promise.all([fresh.close(), damaged.close(), repo.close()]);
  });

  test('a blob whose content does not match its id is damaged', async () => {
    // Two repositories share nothing: a pack copied from another one does not open.
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    const saved = await repo.saveBlob('data', Buffer.from('one'));
    await repo.flush();
    const other = new MemoryBackend();
    const otherRepo = await initRepository(other, PASSWORD, OPTIONS);
    await otherRepo.saveBlob('data', Buffer.from('one'));
    await otherRepo.flush();
    const [pack] = backend.names('data');
    backend.put('data', pack!, other.get('data', other.names('data')[0]!));
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    await assert.rejects(fresh.loadBlob(saved.id), isCode('damaged', saved.id));
    await Promise.all([fresh.close(), repo.close(), otherRepo.close()]);
  });

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
