import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Provider, ProviderName, ProviderSnapshot } from '../model/index.ts';
import { listKeptSets, releaseKeptSet, saveKeptSet, type KeptSet } from './kept-sets.ts';

let stateDir: string;
before(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'quiesce-kept-'));
});
after(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const snapshot: ProviderSnapshot = {
  provider: 'btrfs',
  setId: '20261204T030000Z-a1b2c3',
  paths: [{ original: '/srv', snapshot: '/srv/.quiesce/20261204T030000Z-a1b2c3' }],
  handle: { subvolumes: ['/srv/.quiesce/20261204T030000Z-a1b2c3'] },
};
const kept: KeptSet = { setId: snapshot.setId, createdAt: '2026-12-04T03:00:00.000Z', snapshots: [snapshot] };

function recordingProvider(name: ProviderName, released: ProviderSnapshot[]): Map<ProviderName, Provider> {
  return new Map([
    [name, { name, release: async (s: ProviderSnapshot) => void released.push(s) } as unknown as Provider],
  ]);
}

test('a kept set is saved, listed as it was, and released by its provider, then forgotten', async () => {
  const dir = join(stateDir, 'one');
  await saveKeptSet(dir, kept);
  assert.deepEqual(await listKeptSets(dir), [kept]);
  const released: ProviderSnapshot[] = [];
  assert.deepEqual(await releaseKeptSet(dir, kept.setId, recordingProvider('btrfs', released)), kept);
  assert.deepEqual(released, [snapshot]);
  assert.deepEqual(await listKeptSets(dir), []);
  assert.deepEqual(await readdir(join(dir, 'sets')), []);
});

test('no kept sets: an empty list; an unknown or malformed id is bad usage', async () => {
  const dir = join(stateDir, 'none');
  assert.deepEqual(await listKeptSets(dir), []);
  await assert.rejects(releaseKeptSet(dir, 'nope', new Map()), { code: 'bad-usage', message: /no kept set nope/ });
  await assert.rejects(releaseKeptSet(dir, '../x', new Map()), { code: 'bad-usage', message: /is not a set id/ });
});

test('a kept set taken by a provider that is not here is refused and kept', async () => {
  const dir = join(stateDir, 'other');
  await saveKeptSet(dir, kept);
  await assert.rejects(releaseKeptSet(dir, kept.setId, recordingProvider('copy', [])), { code: 'provider-failed' });
  assert.equal((await listKeptSets(dir)).length, 1);
});

test('a file that is not a kept set is refused with its path and what is wrong, not trusted', async () => {
  const dir = join(stateDir, 'bad');
  await saveKeptSet(dir, kept);
  const path = join(dir, 'sets', 'broken.json');
  await writeFile(path, JSON.stringify({ setId: 'broken', createdAt: 'now', snapshots: [{ provider: 'zfs' }] }));
  await assert.rejects(listKeptSets(dir), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'damaged');
    assert.match(error.message, /broken\.json is not a kept set \(snapshots\.0\.provider: /);
    return true;
  });
  await assert.rejects(releaseKeptSet(dir, 'broken', new Map()), { code: 'damaged' });
});
