import assert from 'node:assert/strict';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FileNode } from '../repository/index.ts';
import { HardLinkRestore } from './hard-links.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-hard-links-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const node = (name: string, hardlink?: string): FileNode => ({
  name,
  mode: 0o100644,
  uid: 0,
  gid: 0,
  mtimeNs: '0',
  type: 'file',
  size: 4,
  content: [],
  ...(hardlink === undefined ? {} : { hardlink }),
});

test('later names link to the first, replacing what is in their way', async () => {
  const links = new HardLinkRestore();
  const first = join(dir, 'first');
  const later = join(dir, 'later');
  await writeFile(later, 'old content in the way');
  let written = 0;
  const write = (path: string) => async () => {
    written++;
    await writeFile(path, 'data');
    return true;
  };
  assert.equal(await links.restore(node('first', '1:2'), first, true, write(first)), false);
  assert.equal(await links.restore(node('later', '1:2'), later, false, write(later)), true);
  assert.equal(written, 1, 'the content is written once');
  const [a, b] = await Promise.all([lstat(first), lstat(later)]);
  assert.equal(b.ino, a.ino);
  assert.equal(a.nlink, 2);
  assert.equal(await readFile(later, 'utf8'), 'data');
});

test('when the first name fails, the next is restored on its own and the later ones link to it', async () => {
  const links = new HardLinkRestore();
  const calls: string[] = [];
  const attempt = (name: string, ok: boolean) => async () => {
    calls.push(name);
    if (ok) await writeFile(join(dir, name), 'data');
    return ok;
  };
  await links.restore(node('damaged', '3:4'), join(dir, 'damaged'), true, attempt('damaged', false));
  assert.equal(await links.restore(node('second', '3:4'), join(dir, 'second'), true, attempt('second', true)), false);
  assert.equal(await links.restore(node('third', '3:4'), join(dir, 'third'), true, attempt('third', true)), true);
  assert.equal(await links.restore(node('single'), join(dir, 'single'), true, attempt('single', true)), false);
  assert.deepEqual(calls, ['damaged', 'second', 'single'], 'the third name links to the second');
  assert.equal((await lstat(join(dir, 'third'))).ino, (await lstat(join(dir, 'second'))).ino);
});
