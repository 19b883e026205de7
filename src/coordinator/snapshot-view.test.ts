import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KnownFile, KnownFiles } from '../model/index.ts';
import { resolveSnapshotPath, withoutComponentFiles } from './snapshot-view.ts';

const paths = [
  { original: '/srv/data', snapshot: '/snap/1/data' },
  { original: '/srv/data/db', snapshot: '/snap/2/db' },
  { original: '/etc/app.conf', snapshot: '/snap/1/app.conf' },
  { original: '/var/', snapshot: '/snap/3/var/' },
];

test('resolveSnapshotPath maps an original path, or a file below an original directory, into the snapshot', () => {
  assert.equal(resolveSnapshotPath(paths, '/srv/data'), '/snap/1/data');
  assert.equal(resolveSnapshotPath(paths, '/srv/data/a/b.txt'), '/snap/1/data/a/b.txt');
  assert.equal(resolveSnapshotPath(paths, '/etc/app.conf'), '/snap/1/app.conf');
  // A directory named with its trailing slash holds what is below it.
  assert.equal(resolveSnapshotPath(paths, '/var/log/x'), '/snap/3/var/log/x');
});

test('resolveSnapshotPath takes the longest original that holds the path', () => {
  assert.equal(resolveSnapshotPath(paths, '/srv/data/db'), '/snap/2/db');
  assert.equal(resolveSnapshotPath(paths, '/srv/data/db/main.sqlite'), '/snap/2/db/main.sqlite');
  // Order does not matter.
  assert.equal(resolveSnapshotPath([...paths].reverse(), '/srv/data/db/main.sqlite'), '/snap/2/db/main.sqlite');
});

test('resolveSnapshotPath answers null for a path outside the set, even one sharing a prefix', () => {
  assert.equal(resolveSnapshotPath(paths, '/srv/database'), null);
  assert.equal(resolveSnapshotPath(paths, '/etc/app.conf.bak'), null);
  assert.equal(resolveSnapshotPath(paths, '/srv'), null);
  assert.equal(resolveSnapshotPath([], '/srv/data'), null);
});

function knownIn(dirs: Record<string, string[]>): KnownFiles & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async inDirectory(dir) {
      asked.push(dir);
      const names = dirs[dir];
      if (!names) return null;
      return new Map(names.map((name): [string, KnownFile] => [name, { size: 1n, mtimeNs: 2n }]));
    },
  };
}

test('withoutComponentFiles leaves out the files the writers name, and whole directories they name', async () => {
  const known = knownIn({ '/srv': ['a.txt', 'shop.db', 'shop.db-wal'], '/': ['vmlinuz'], '/srv/shop': ['x'] });
  const filtered = withoutComponentFiles(known, new Set(['/srv/shop.db', '/srv/shop', '/vmlinuz']));
  assert.deepEqual([...(await filtered.inDirectory('/srv'))!.keys()], ['a.txt', 'shop.db-wal']);
  assert.deepEqual([...(await filtered.inDirectory('/'))!.keys()], []);
  // A component's directory, and all below it, is always captured: never asked.
  assert.equal(await filtered.inDirectory('/srv/shop'), null);
  assert.equal(await filtered.inDirectory('/srv/shop/sub'), null);
  assert.equal(await filtered.inDirectory('/nothing'), null);
  assert.deepEqual(known.asked, ['/srv', '/', '/nothing']);
  // With no component files, the requester's files are used as they are.
  assert.equal(withoutComponentFiles(known, new Set()), known);
});
