import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { FsBackend } from './backend/fs-backend.ts';
import { initRepository, openRepository } from './open.ts';
import type { Tree } from './tree.ts';
import { PASSWORD, SMALL as OPTIONS, isCode, pseudoRandom } from './testing.ts';

describe('repository trees, manifests and keys', () => {
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
});

describe('opening a repository', () => {
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
});

describe('a damaged repository', () => {
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
});
