import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import { MemoryBackend } from './backend/memory-backend.ts';
import { PASSWORD, pseudoRandom, SMALL, storeTwoSets, type TwoSets } from './testing.ts';
import { FsBackend } from './backend/fs-backend.ts';
import { initRepository, openRepository } from './open.ts';
import type { Repository } from './repository-api.ts';

function storedBytes(backend: MemoryBackend): number {
  return backend.names('data').reduce((sum, name) => sum + backend.get('data', name).length, 0);
}

async function assertReadable(repo: Repository, ids: string[]): Promise<void> {
  for (const id of ids) await repo.loadBlob(id);
}

async function setup(): Promise<{ backend: MemoryBackend; repo: Repository; sets: TwoSets }> {
  const backend = new MemoryBackend();
  const repo = await initRepository(backend, PASSWORD, SMALL);
  const sets = await storeTwoSets(repo);
  return { backend, repo, sets };
}

describe('prune: what goes and what stays', () => {
  test('removes the temporary files a crash left (FsBackend) once they are older than the grace period', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-prune-'));
    try {
      const backend = await FsBackend.create(join(dir, 'repo'));
      const repo = await initRepository(backend, PASSWORD, SMALL);
      const sets = await storeTwoSets(repo);
      const old = new Date(Date.now() - 2 * 24 * 3600_000);
      const stale = [
        join(dir, 'repo', 'data', '.tmp-0123456789abcdef'),
        join(dir, 'repo', 'index', '.tmp-00000000aaaaaaaa'),
      ];
      for (const path of stale) {
        await writeFile(path, Buffer.alloc(1000));
        await utimes(path, old, old);
      }
      const fresh = join(dir, 'repo', 'data', '.tmp-fedcba9876543210'); // a write under way, perhaps
      await writeFile(fresh, Buffer.alloc(10));
      const report = await repo.prune();
      assert.equal(report.temporaryFilesRemoved, 2);
      assert.ok(report.bytesFreed >= 2000);
      for (const path of stale) assert.equal(existsSync(path), false, `${path} removed`);
      assert.ok(existsSync(fresh), 'a young temporary file is left alone');
      await assertReadable(repo, [...sets.blobsOf.a, ...sets.blobsOf.b, ...sets.blobsOf.c]);
      await repo.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('removes what no manifest needs and keeps what one does', async () => {
    const { backend, repo, sets } = await setup();
    const before = storedBytes(backend);
    const nothing = await repo.prune();
    assert.deepEqual(nothing, {
      packsRemoved: 0,
      packsRepacked: 0,
      bytesFreed: 0,
      packsKeptForGrace: 0,
      temporaryFilesRemoved: 0,
    });
    await repo.removeManifest(sets.manifests[0]);
    const report = await repo.prune({ graceMs: 0 });
    assert.ok(report.packsRemoved + report.packsRepacked > 0, JSON.stringify(report));
    assert.ok(report.bytesFreed >= 90_000, JSON.stringify(report));
    assert.ok(storedBytes(backend) <= before - 90_000, `${storedBytes(backend)} of ${before}`);
    assert.ok(
      sets.blobsOf.a.every((id) => !repo.hasBlob(id)),
      'a.bin is gone from the index',
    );
    await assertReadable(repo, [...sets.blobsOf.b, ...sets.blobsOf.c]);
    await repo.close();
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const check = await fresh.check({ readData: true });
    assert.deepEqual(check.problems, []);
    await assertReadable(fresh, [...sets.blobsOf.b, ...sets.blobsOf.c]);
    assert.equal(backend.names('locks').length, 0, 'the exclusive lock is released');
    await fresh.close();
  });

  test('a dry run reports and changes nothing', async () => {
    const { backend, repo, sets } = await setup();
    await repo.removeManifest(sets.manifests[1]);
    const objects = [...backend.objects.keys()].filter((k) => !k.startsWith('locks/')).sort();
    const report = await repo.prune({ dryRun: true });
    assert.ok(report.packsRemoved + report.packsRepacked > 0);
    assert.deepEqual([...backend.objects.keys()].filter((k) => !k.startsWith('locks/')).sort(), objects);
    await repo.close();
  });

  test('a pack no index names is kept for the grace period, then removed', async () => {
    const { backend, repo, sets } = await setup();
    await repo.saveBlob('data', pseudoRandom(70_000, 'orphan')); // a full pack, never indexed (as if we crashed)
    await repo.close();
    const orphan = backend.names('data').length;
    const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
    const kept = await fresh.prune();
    assert.equal(kept.packsKeptForGrace, 1);
    assert.equal(backend.names('data').length, orphan);
    const later = await fresh.prune({ graceMs: 0 });
    assert.equal(later.packsKeptForGrace, 0);
    assert.equal(later.packsRemoved, 1);
    assert.equal(backend.names('data').length, orphan - 1);
    await assertReadable(fresh, [...sets.blobsOf.a, ...sets.blobsOf.b, ...sets.blobsOf.c]);
    await fresh.close();
  });
});

describe('prune under locks, crashes and reuse', () => {
  test('refuses to run beside a live lock, and when a manifest cannot be read', async () => {
    const { backend, repo, sets } = await setup();
    const other = await openRepository(backend, PASSWORD, { workers: 0 });
    const shared = await other.lock('shared');
    await assert.rejects(repo.prune(), (e: unknown) => e instanceof QuiesceError && e.code === 'locked');
    await shared.release();
    backend.put('manifests', sets.manifests[0], Buffer.from('garbage'));
    await repo.removeManifest(sets.manifests[1]);
    const objects = backend.names('data').sort();
    await assert.rejects(
      repo.prune(),
      (e: unknown) => e instanceof QuiesceError && e.code === 'damaged' && e.message.includes('nothing was removed'),
    );
    assert.deepEqual(backend.names('data').sort(), objects);
    await Promise.all([repo.close(), other.close()]);
  });

  for (const crashAt of ['index', 'data'] as const) {
    test(`a crash while removing old ${crashAt} objects leaves a valid repository`, async () => {
      const { backend, repo, sets } = await setup();
      await repo.removeManifest(sets.manifests[0]);
      const remove = backend.remove.bind(backend);
      backend.remove = async (type, name, options) => {
        if (type === crashAt) throw new Error('power cut');
        return remove(type, name, options);
      };
      await assert.rejects(repo.prune(), /power cut/);
      backend.remove = remove;
      await repo.close();
      const fresh = await openRepository(backend, PASSWORD, { workers: 0 });
      const check = await fresh.check({ readData: true });
      assert.equal(check.ok, true, JSON.stringify(check.problems));
      await assertReadable(fresh, [...sets.blobsOf.b, ...sets.blobsOf.c]);
      await fresh.prune({ graceMs: 0 });
      const after = await fresh.check({ readData: true });
      assert.deepEqual(after.problems, []);
      await fresh.close();
    });
  }

  test('new backups after a prune deduplicate only against what is still stored', async () => {
    const { backend, repo, sets } = await setup();
    await repo.removeManifest(sets.manifests[0]);
    await repo.removeManifest(sets.manifests[1]);
    await repo.prune({ graceMs: 0 });
    assert.equal(backend.names('data').length, 0);
    // The same content again must be stored again, not "deduplicated" against deleted packs.
    const again = await storeTwoSets(repo);
    assert.deepEqual(again.blobsOf, sets.blobsOf);
    const check = await repo.check({ readData: true });
    assert.deepEqual(check.problems, []);
    await repo.close();
  });

  test('data a forget just released is marked, kept for the grace period, and revived if reused', async () => {
    const { backend, repo, sets } = await setup();
    const packsBefore = backend.names('data').length;
    await repo.removeManifest(sets.manifests[0]);
    await repo.removeManifest(sets.manifests[1]);
    const marked = await repo.prune();
    assert.ok(marked.packsKeptForGrace > 0, JSON.stringify(marked));
    assert.equal(marked.packsRemoved, 0);
    assert.equal(backend.names('data').length, packsBefore, 'nothing is deleted within the grace period');
    await assertReadable(repo, [...sets.blobsOf.a, ...sets.blobsOf.b]);
    // The same content stored again reuses the marked packs: they come back to life.
    await storeTwoSets(repo);
    const revived = await repo.prune({ graceMs: 0 });
    assert.equal(revived.packsRemoved, 0, JSON.stringify(revived));
    const check = await repo.check({ readData: true });
    assert.deepEqual(check.problems, []);
    await repo.close();
  });
});
