// Names are bytes on Linux: names that are not valid UTF-8 are backed up and restored byte for
// byte through the command line, a user's own `.quiesce-snapshots` is kept (only a provider's
// store, at a file system's root, is skipped), and names too long for the target fail one by one.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, lstatSync, writeFileSync, symlinkSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { archive, restore } from '../src/backup/index.ts';
import { openRepository, FsBackend, type TreeNode } from '../src/repository/index.ts';
import { decodeRawName } from '../src/model/index.ts';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const PASSWORD = 'a long and secret password';
const asRoot = process.getuid?.() === 0;
let dir: string;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

async function writeConfig(name: string, paths: string[]): Promise<{ config: string; repo: string }> {
  const file = join(dir, `${name}.yaml`);
  const repo = join(dir, `${name}-repo`);
  await writeFile(
    file,
    [
      `repository: ${repo}`,
      `stateDir: ${join(dir, `${name}-state`)}`,
      `stagingDir: ${join(dir, `${name}-staging`)}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${paths.join(', ')}]`,
    ].join('\n'),
  );
  return { config: file, repo };
}

const raw = (...parts: (string | Buffer)[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
const bytes = (latin1: string) => Buffer.from(latin1, 'latin1');

/** Every entry below `root`, by its bytes: `path-bytes-hex type content-or-target-hex`. */
function describeBytes(root: Buffer, rel: Buffer = Buffer.alloc(0)): string[] {
  const out: string[] = [];
  const here = rel.length === 0 ? root : raw(root, '/', rel);
  for (const name of readdirSync(here, { encoding: 'buffer' }).sort((a, b) => Buffer.compare(a, b))) {
    const childRel = rel.length === 0 ? name : raw(rel, '/', name);
    const path = raw(root, '/', childRel);
    const stats = lstatSync(path);
    if (stats.isDirectory()) {
      out.push(`${childRel.toString('hex')} dir`);
      out.push(...describeBytes(root, childRel));
    } else if (stats.isSymbolicLink()) {
      out.push(`${childRel.toString('hex')} link ${readlinkSync(path, { encoding: 'buffer' }).toString('hex')}`);
    } else {
      out.push(`${childRel.toString('hex')} file ${readFileSync(path).toString('hex')}`);
    }
  }
  return out;
}

const noStack = (text: string) => assert.doesNotMatch(text, /\n\s+at /, text);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-raw-names-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('file names as bytes', () => {
  test('names that are not UTF-8 come back byte for byte, an incremental reuses them, --path selects them', async () => {
    const data = join(dir, 'data');
    const root = Buffer.from(data);
    const odd = bytes('d\xff\xfe');
    mkdirSync(raw(root, '/', odd), { recursive: true });
    writeFileSync(raw(root, '/', bytes('\xff')), 'ff\n');
    writeFileSync(raw(root, '/', bytes('\xfe\xfe')), 'fefe\n');
    writeFileSync(raw(root, '/', bytes('a\x80b')), 'a80b\n');
    writeFileSync(raw(root, '/', 'é'), 'valid\n');
    writeFileSync(raw(root, '/', odd, '/', 'inside'), 'inside an odd directory\n');
    writeFileSync(raw(root, '/', odd, '/', bytes('\xc0\xaf')), 'an overlong slash, as bytes\n');
    symlinkSync(bytes('\xff'), raw(root, '/', bytes('link\xf0')));
    const original = describeBytes(root);
    assert.equal(original.length, 8);
    // Written ten seconds ago: a file written within a second before a set is read again by the
    // next one (a racy entry), and the incremental below must find nothing to read.
    const past = Math.floor(Date.now() / 1000) - 10;
    const touched = spawnSync('find', [data, '-exec', 'touch', '-h', '-d', `@${past}`, '{}', '+']);
    assert.equal(touched.status, 0, String(touched.stderr));

    const { config, repo } = await writeConfig('names', [data]);
    assert.equal(quiesce('init', '--config', config).code, 0);
    const first = quiesce('backup', '--config', config, '--json');
    assert.equal(first.code, 0, first.stderr);

    const target = join(dir, 'restored');
    const restored = quiesce('restore', 'latest', '--config', config, '--target', target, '--json');
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal((JSON.parse(restored.stdout) as { files: number }).files, 6);
    assert.deepEqual(describeBytes(Buffer.from(join(target, data))), original);

    // The tree holds every name, escaped as lone surrogates, sorted as restore and check expect.
    const repository = await openRepository(await FsBackend.create(repo), PASSWORD);
    try {
      const sets = await repository.listManifests();
      assert.equal(sets.length, 1);
      const manifest = await repository.loadManifest(sets[0]!);
      let tree = await repository.loadTree(manifest.tree);
      for (const part of data.split('/').filter(Boolean)) {
        const node = tree.nodes.find((n) => n.name === part) as TreeNode & { subtree: string };
        tree = await repository.loadTree(node.subtree);
      }
      const names = tree.nodes.map((n) => n.name);
      assert.deepEqual(names, [...names].sort());
      assert.ok(names.includes(decodeRawName(bytes('\xff'))));
      assert.ok(names.includes('é'));
    } finally {
      await repository.close();
    }
    assert.equal(quiesce('check', '--config', config, '--read-data').code, 0);

    // Nothing changed: the next backup reads nothing again.
    const second = quiesce('backup', '--config', config, '--type', 'incremental', '--json');
    assert.equal(second.code, 0, second.stderr);
    const report = JSON.parse(second.stdout) as Record<string, unknown>;
    assert.equal(findNumber(report, 'bytesRead'), 0, second.stdout);

    // --path as the output shows such a name: each byte that is not UTF-8 as \xHH.
    const one = join(dir, 'one');
    const chosen = quiesce('restore', 'latest', '--config', config, '--target', one, '--path', `${data}/d\\xff\\xfe`);
    assert.equal(chosen.code, 0, chosen.stderr);
    assert.deepEqual(
      describeBytes(Buffer.from(join(one, data))),
      original.filter((line) => line.startsWith(odd.toString('hex'))),
    );
  });

  test("a user's own .quiesce-snapshots is kept; a snapshot store at a file system's root is not", async (t) => {
    if (!asRoot) return t.skip('needs root to mount a file system');
    const data = join(dir, 'store-data');
    await mkdir(data, { recursive: true });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', data]);
    if (mounted.status !== 0) return t.skip(`cannot mount a tmpfs: ${mounted.stderr.toString()}`);
    try {
      await mkdir(join(data, 'app', '.quiesce-snapshots'), { recursive: true });
      await writeFile(join(data, 'app', '.quiesce-snapshots', 'keep.txt'), 'the user wants this\n');
      // What a reflink or fsfreeze provider leaves at the root of the file system it snapshots.
      await mkdir(join(data, '.quiesce-snapshots', 'old-set', 'root'), { recursive: true });
      await writeFile(join(data, '.quiesce-snapshots', 'old-set', 'root', 'copy.txt'), 'a snapshot copy\n');
      const { config, repo } = await writeConfig('store', [data]);
      assert.equal(quiesce('init', '--config', config).code, 0);
      const backup = quiesce('backup', '--config', config, '--json');
      assert.equal(backup.code, 0, backup.stderr);
      const target = join(dir, 'store-restored');
      const restored = quiesce('restore', 'latest', '--config', config, '--target', target);
      assert.equal(restored.code, 0, restored.stderr);
      assert.equal(
        readFileSync(join(target, data, 'app', '.quiesce-snapshots', 'keep.txt'), 'utf8'),
        'the user wants this\n',
      );
      assert.deepEqual(readdirSync(join(target, data)), ['app']);
      // The archiver's own walk of a live file system (as with held-freeze) keeps the same rule.
      const repository = await openRepository(await FsBackend.create(repo), PASSWORD);
      try {
        const { tree } = await archive({ repository, sources: [{ original: data, snapshot: data }] });
        const live = join(dir, 'store-live');
        const result = await restore({ repository, tree, target: live });
        assert.equal(result.files, 1);
        assert.deepEqual(readdirSync(join(live, data)), ['app']);
        assert.deepEqual(readdirSync(join(live, data, 'app', '.quiesce-snapshots')), ['keep.txt']);
      } finally {
        await repository.close();
      }
    } finally {
      spawnSync('umount', ['-l', data]);
    }
  });
});

describe('names too long for the target', () => {
  test('a name of 256 bytes and a path over 4,096 bytes fail one by one, named; the rest restores', async () => {
    const seed = join(dir, 'long-seed');
    await mkdir(seed, { recursive: true });
    const { config, repo } = await writeConfig('long', [seed]);
    assert.equal(quiesce('init', '--config', config).code, 0);
    // A real set, whose record the crafted one borrows.
    assert.equal(quiesce('backup', '--config', config).code, 0);
    const longName = `${'n'.repeat(250)}-\udcff.txt`; // 256 bytes, one of them not UTF-8
    const level = 'd'.repeat(200);
    const repository = await openRepository(await FsBackend.create(repo), PASSWORD);
    try {
      const file = async (name: string, text: string): Promise<TreeNode> => {
        const data = Buffer.from(text);
        const blob = await repository.saveBlob('data', data);
        const meta = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '0' };
        return { name, ...meta, type: 'file', size: data.length, content: [{ id: blob.id, length: data.length }] };
      };
      const dirNode = async (name: string, nodes: TreeNode[]): Promise<TreeNode> => {
        const { id } = await repository.saveTree({ nodes: nodes.sort((a, b) => (a.name < b.name ? -1 : 1)) });
        return { name, mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', type: 'dir', subtree: id };
      };
      // 21 levels of 200 bytes: the path passes 4,096 bytes on the way down.
      let deep = await dirNode(level, [await file('bottom.txt', 'too deep\n')]);
      for (let i = 0; i < 20; i++) deep = await dirNode(level, [deep]);
      const top = await dirNode('long', [
        await file('a-first.txt', 'first\n'),
        await file(longName, 'too long a name\n'),
        deep,
        await file('z-last.txt', 'last\n'),
      ]);
      const { id: tree } = await repository.saveTree({ nodes: [top] });
      const real = await repository.loadManifest((await repository.listManifests())[0]!);
      await repository.saveManifest({ ...real, setId: 'long-names', time: new Date().toISOString(), tree });
    } finally {
      await repository.close();
    }
    const target = join(dir, 'long-restored');
    const restored = quiesce('restore', 'long-names', '--config', config, '--target', target);
    assert.equal(restored.code, 1, restored.stderr);
    noStack(restored.stderr);
    const lines = restored.stderr.trim().split('\n');
    assert.equal(lines.length, 2, restored.stderr);
    assert.match(lines.find((l) => l.includes('n'.repeat(250))) ?? '', /-\\xff\.txt.*256 bytes.*ENAMETOOLONG/);
    assert.match(lines.find((l) => l.includes(level)) ?? '', /4096.*ENAMETOOLONG|more than the 4095 Linux allows/);
    assert.deepEqual(readdirSync(join(target, 'long')).sort(), ['a-first.txt', level, 'z-last.txt']);
    assert.equal(readFileSync(join(target, 'long', 'z-last.txt'), 'utf8'), 'last\n');
  });
});

/** The first number under `key` anywhere in a JSON value. */
function findNumber(value: unknown, key: string): number | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  for (const [k, v] of Object.entries(value)) {
    if (k === key && typeof v === 'number') return v;
    const found = findNumber(v, key);
    if (found !== undefined) return found;
  }
  return undefined;
}
