import { test } from 'node:test';
import assert from 'node:assert/strict';
import { link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuiesceError } from '../model/index.ts';
import { copyTree, removeTree } from './fs-tree.ts';
import { outermost } from './snapshot-layout.ts';

test('copies names that are not UTF-8, skips excluded paths and stops at boundaries', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'quiesce-fs-tree-'));
  t.after(() => removeTree(base));
  const source = join(base, 'src');
  await mkdir(join(source, 'store', 'old'), { recursive: true });
  await mkdir(join(source, 'mnt', 'inside'), { recursive: true });
  await writeFile(Buffer.from(`${source}/latin1-\xe9`, 'latin1'), 'bytes');
  await writeFile(join(source, 'mnt', 'inside', 'f'), 'x');
  await symlink('../elsewhere', join(source, 'up'));

  assert.equal(
    await copyTree(source, join(base, 'dst'), {
      exclude: new Set([join(source, 'store')]),
      stopAt: new Set([join(source, 'mnt')]),
    }),
    true,
  );
  const names = await readdir(join(base, 'dst'), { encoding: 'buffer' });
  assert.deepEqual(names.map((n) => n.toString('latin1')).sort(), ['latin1-\xe9', 'mnt', 'up']);
  assert.equal(await readFile(Buffer.from(`${base}/dst/latin1-\xe9`, 'latin1'), 'utf8'), 'bytes');
  assert.deepEqual(await readdir(join(base, 'dst', 'mnt')), []);
  assert.equal(await readlink(join(base, 'dst', 'up')), '../elsewhere');
  assert.equal(await copyTree(join(base, 'absent'), join(base, 'dst2')), false);
  await assert.rejects(lstat(join(base, 'dst2')), { code: 'ENOENT' });
});

test('keeps hard links within the tree', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'quiesce-fs-tree-'));
  t.after(() => removeTree(base));
  await mkdir(join(base, 'src'));
  await writeFile(join(base, 'src', 'a'), 'same');
  await link(join(base, 'src', 'a'), join(base, 'src', 'b'));
  await copyTree(join(base, 'src'), join(base, 'dst'));
  const [a, b] = await Promise.all([stat(join(base, 'dst', 'a')), stat(join(base, 'dst', 'b'))]);
  assert.equal(a.ino, b.ino);
});

test('an aborted copy stops with provider-failed', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'quiesce-fs-tree-'));
  t.after(() => removeTree(base));
  await mkdir(join(base, 'src'));
  const controller = new AbortController();
  controller.abort(new Error('stop'));
  await assert.rejects(
    copyTree(join(base, 'src'), join(base, 'dst'), { signal: controller.signal }),
    (error: unknown) => error instanceof QuiesceError && error.code === 'provider-failed' && /stop/.test(error.message),
  );
});

test('outermost keeps only paths not inside another', () => {
  assert.deepEqual(outermost(['/a/b', '/a', '/ab', '/c/d', '/a']), ['/a', '/ab', '/c/d']);
});
