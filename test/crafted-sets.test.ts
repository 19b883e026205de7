// Restoring and checking sets crafted through the repository API, as a hostile repository holds
// them: trees that share subtrees (legitimately, as equal empty directories do, and as a DAG of
// 41 trees naming 2^40 paths), 10,000 levels of directories, a uid of 2^32 + 5, an mtime of
// 10^40 ns and a symlink target with a NUL. Each ends in a clear error naming what it concerns,
// the rest restored where it can be, exit 1, no stack trace, and nothing expands without bound.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FsBackend } from '../src/repository/backend/index.ts';
import { openRepository, type Repository, type Tree, type TreeNode } from '../src/repository/index.ts';
import { storeFile } from '../src/repository/testing.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const PASSWORD = 'a long and secret password';
let dir: string;
let config: string;
let meta: unknown;

function quiesce(...args: string[]) {
  const started = Date.now();
  const result = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, ms: Date.now() - started };
}

function noStack(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
}

const base = { mode: 0o755, uid: 0, gid: 0, mtimeNs: '1700000000000000000' };
const dirNode = (name: string, subtree: string): TreeNode => ({ ...base, name, type: 'dir', subtree });

/** Opens the repository, lets `craft` store trees, saves a set of its root; answers the set id. */
async function craftSet(setId: string, craft: (repo: Repository) => Promise<Tree>): Promise<string> {
  const repo = await openRepository(new FsBackend(join(dir, 'repo')), PASSWORD, { workers: 0 });
  try {
    const root = await repo.saveTree(await craft(repo));
    await repo.saveManifest({ version: 1, setId, time: new Date().toISOString(), tree: root.id, meta });
  } finally {
    await repo.close();
  }
  return setId;
}

async function tempFiles(root: string): Promise<string[]> {
  return (await readdir(root, { recursive: true })).map(String).filter((p) => p.includes('.quiesce-restore-'));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-crafted-'));
  const data = join(dir, 'data');
  await mkdir(data);
  await writeFile(join(data, 'real.txt'), 'a real file\n');
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  assert.equal(quiesce('init', '--config', config).code, 0);
  assert.equal(quiesce('backup', '--config', config).code, 0);
  // A real set's metadata, for the crafted sets to be listed as backup sets.
  const repo = await openRepository(new FsBackend(join(dir, 'repo')), PASSWORD, { workers: 0 });
  meta = (await repo.loadManifest((await repo.listManifests())[0]!)).meta;
  await repo.close();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('crafted sets', () => {
  test('equal empty directories share one tree: they restore, and check reports it as information', async () => {
    let empty = '';
    const setId = await craftSet('crafted-empty-dirs', async (repo) => {
      empty = (await repo.saveTree({ nodes: [] })).id;
      const sub = await repo.saveTree({ nodes: [dirNode('e3', empty)] });
      return {
        nodes: [
          dirNode('e1', empty),
          dirNode('e2', empty),
          dirNode('sub', sub.id),
          await storeFile(repo, 'x.txt', Buffer.from('x\n')),
        ],
      };
    });
    const target = join(dir, 'target-empty');
    const restored = quiesce('restore', setId, '--config', config, '--target', target);
    assert.equal(restored.code, 0, restored.stderr);
    for (const path of ['e1', 'e2', 'sub/e3'])
      assert.deepEqual(await readdir(join(target, path)), [], `${path} is an empty directory`);
    assert.equal(await readFile(join(target, 'x.txt'), 'utf8'), 'x\n');
    const check = quiesce('check', '--config', config);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, new RegExp(`shared-tree ${empty}: .*3 paths in set crafted-empty-dirs`));
    assert.match(check.stdout, /no errors were found/);
  });

  test('a DAG of 41 trees naming 2^40 paths: restore refuses it within seconds; check names the shared trees', async () => {
    const chain: string[] = [];
    const setId = await craftSet('crafted-dag', async (repo) => {
      let below = (await repo.saveTree({ nodes: [] })).id;
      for (let i = 0; i < 40; i++) {
        chain.unshift(below);
        below = (await repo.saveTree({ nodes: [dirNode('a', below), dirNode('b', below)] })).id;
      }
      return { nodes: [dirNode('top', below)] };
    });
    const target = join(dir, 'target-dag');
    const restored = quiesce('restore', setId, '--config', config, '--target', target);
    assert.equal(restored.code, 1);
    noStack(restored.stderr);
    assert.match(restored.stderr, /expands to more than 100,000,000 entries/);
    assert.ok(restored.ms < 20_000, `refused in ${restored.ms} ms`);
    assert.deepEqual(existsSync(target) ? await readdir(target) : [], [], 'nothing was written');
    const part = quiesce('restore', setId, '--config', config, '--target', target, '--path', '/top/a');
    assert.equal(part.code, 1);
    noStack(part.stderr);
    assert.match(part.stderr, /could not restore \/top\/a: \/top\/a expands to more than 100,000,000 entries/);
    assert.ok(part.ms < 20_000, `refused in ${part.ms} ms`);
    const check = quiesce('check', '--config', config);
    assert.equal(check.code, 1);
    noStack(check.stderr);
    assert.match(check.stdout, /oversized-set .*: set crafted-dag expands to more than 100,000,000 entries/);
    // The most-used trees are named, each as shared: the deepest is reached by 2^40 paths.
    for (const id of chain.slice(-20)) assert.match(check.stdout, new RegExp(`shared-tree ${id}: `));
    assert.match(
      check.stdout,
      new RegExp(`shared-tree ${chain.at(-1)}: .*more than 100,000,000 paths in set crafted-dag`),
    );
  });

  test('10,000 levels of directories: the path too long is named, the rest of the set restores', async () => {
    const setId = await craftSet('crafted-deep', async (repo) => {
      let below = (await repo.saveTree({ nodes: [await storeFile(repo, 'bottom', Buffer.from('deep\n'))] })).id;
      for (let i = 0; i < 10_000; i++) below = (await repo.saveTree({ nodes: [dirNode('d', below)] })).id;
      const fine = await repo.saveTree({ nodes: [await storeFile(repo, 'inside', Buffer.from('inside\n'))] });
      return {
        nodes: [dirNode('deep', below), dirNode('fine', fine.id), await storeFile(repo, 'ok.txt', Buffer.from('ok\n'))],
      };
    });
    const target = join(dir, 'target-deep');
    const restored = quiesce('restore', setId, '--config', config, '--target', target);
    assert.equal(restored.code, 1);
    noStack(restored.stderr);
    assert.match(restored.stderr, /could not restore \/deep(\/d)+: .*more than the 4095 Linux allows/);
    assert.equal(await readFile(join(target, 'ok.txt'), 'utf8'), 'ok\n');
    assert.equal(await readFile(join(target, 'fine', 'inside'), 'utf8'), 'inside\n');
    assert.ok((await lstat(join(target, 'deep', 'd', 'd'))).isDirectory(), 'the levels a path can hold are restored');
    assert.deepEqual(await tempFiles(target), []);
  });

  test('a uid of 2^32 + 5, an mtime of 10^40 ns, a symlink target with NUL: each named, the others restored', async () => {
    const setId = await craftSet('crafted-meta', async (repo) => {
      const file = (name: string) => storeFile(repo, name, Buffer.from(`${name}\n`));
      return {
        nodes: [
          { ...(await file('bad-mtime')), mtimeNs: `1${'0'.repeat(40)}` },
          { ...(await file('bad-uid')), uid: 2 ** 32 + 5 },
          await file('good'),
          { ...base, name: 'good-link', type: 'symlink', target: 'good' },
          { ...base, name: 'nul-link', type: 'symlink', target: 'a\0b' },
        ],
      };
    });
    const target = join(dir, 'target-meta');
    const restored = quiesce('restore', setId, '--config', config, '--target', target, '--json');
    assert.equal(restored.code, 1);
    noStack(restored.stderr);
    const result = JSON.parse(restored.stdout) as {
      files: number;
      failed: { path: string; error: { message: string } }[];
    };
    const failed = new Map(result.failed.map((f) => [f.path, f.error.message]));
    assert.deepEqual([...failed.keys()].sort(), ['/bad-mtime', '/bad-uid', '/nul-link']);
    assert.match(failed.get('/bad-uid')!, /uid 4294967301 is not a valid owner/);
    assert.match(failed.get('/bad-mtime')!, /modification time .* is beyond what Linux keeps/);
    assert.match(failed.get('/nul-link')!, /NUL/);
    assert.equal(await readFile(join(target, 'good'), 'utf8'), 'good\n');
    assert.equal(await readlink(join(target, 'good-link')), 'good');
    for (const name of ['bad-mtime', 'bad-uid', 'nul-link']) assert.equal(existsSync(join(target, name)), false, name);
    assert.deepEqual(await tempFiles(target), []);
    const plain = quiesce('restore', setId, '--config', config, '--target', join(dir, 'target-meta-2'));
    assert.equal(plain.code, 1);
    noStack(plain.stderr);
    assert.match(plain.stderr, /could not restore \/bad-uid: /);
  });
});
