// What a file system holds besides names and bytes, through a backup by the copy provider and a
// restore: times to the nanosecond (files and symlinks), hard links as one inode, FIFOs, device
// nodes (as root) and sockets (reported skipped, as GNU tar ignores them). As root, and as an
// unprivileged user through the command line.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { findNode, restore, runBackup } from '../src/backup/index.ts';
import { Catalog } from '../src/catalog/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { initRepository } from '../src/repository/index.ts';
import { nativeFsAvailable } from '../src/util/index.ts';
import { TEST_REPOSITORY_OPTIONS } from './helpers/repository.ts';

const PASSWORD = 'correct horse battery staple';
const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const copy = createProviders().find((p) => p.name === 'copy')!;
const asRoot = process.getuid?.() === 0;
/** The unprivileged user the command-line tests run as (root switches to it with setpriv). */
const NOBODY = 65534;
const FILE_NS = 1_700_000_000_123_456_789n;
const LINK_NS = 1_600_000_000_987_654_321n;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-file-metadata-'));
  await chmod(dir, 0o755);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `touch -d @S.N` (utimensat, nanoseconds), of a symlink itself with `-h`: set independently of the code under test. */
function touchNs(path: string, ns: bigint, symlink = false): void {
  const stamp = `@${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, '0')}`;
  execFileSync('touch', [...(symlink ? ['-h'] : []), '-d', stamp, path]);
}

/**
 * The data: a file and a symlink with their own nanosecond times, three names of one inode in
 * two directories, a FIFO, a socket and (as root) a character device like /dev/null.
 */
async function makeData(root: string, withDevice: boolean): Promise<void> {
  await mkdir(join(root, 'a'), { recursive: true });
  await mkdir(join(root, 'b'));
  await writeFile(join(root, 'exact'), 'nanoseconds');
  touchNs(join(root, 'exact'), FILE_NS);
  execFileSync('ln', ['-s', 'exact', join(root, 'link')]);
  touchNs(join(root, 'link'), LINK_NS, true);
  await writeFile(join(root, 'a', 'one'), 'shared content of three names');
  execFileSync('ln', [join(root, 'a', 'one'), join(root, 'a', 'two')]);
  execFileSync('ln', [join(root, 'a', 'one'), join(root, 'b', 'three')]);
  execFileSync('mkfifo', ['-m', '0640', join(root, 'fifo')]);
  execFileSync('python3', [
    '-c',
    'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
    join(root, 'sock'),
  ]);
  if (withDevice) execFileSync('mknod', ['-m', '0620', join(root, 'null'), 'c', '1', '3']);
}

async function assertNs(path: string, ns: bigint): Promise<void> {
  const stats = await lstat(path, { bigint: true });
  assert.equal(stats.mtimeNs, ns, `${path}: mtime ${stats.mtimeNs}, not ${ns}`);
}

/** What every restore of the data must give, root or not. */
async function assertRestored(restored: string): Promise<void> {
  await assertNs(join(restored, 'exact'), FILE_NS);
  await assertNs(join(restored, 'link'), LINK_NS);
  const names = ['a/one', 'a/two', 'b/three'].map((n) => join(restored, n));
  const stats = await Promise.all(names.map((p) => lstat(p)));
  assert.ok(
    stats.every((s) => s.ino === stats[0]!.ino && s.nlink === 3),
    `one inode with three names: ${stats.map((s) => `${s.ino}/${s.nlink}`).join(' ')}`,
  );
  assert.equal(await readFile(names[2]!, 'utf8'), 'shared content of three names');
  const fifo = await lstat(join(restored, 'fifo'));
  assert.ok(fifo.isFIFO(), 'the FIFO is a FIFO again');
  assert.equal(fifo.mode & 0o7777, 0o640);
}

describe('file metadata through backup and restore', () => {
  test('the native addon is built (npm ci builds it from native/ with node-gyp)', () => {
    assert.ok(nativeFsAvailable(), 'build/Release/fs_meta.node is missing: run `npm ci` or `npx node-gyp rebuild`');
  });

  test('nanosecond times, hard links, a FIFO, a device (as root) and a socket, through the copy snapshot', async () => {
    const source = join(dir, 'data');
    await makeData(source, asRoot);
    if (asRoot) await chown(join(source, 'fifo'), 1234, 5678);
    const repository = await initRepository(
      await FsBackend.create(join(dir, 'repo')),
      PASSWORD,
      TEST_REPOSITORY_OPTIONS,
    );
    try {
      const { report } = await runBackup({
        repository,
        catalogCache: join(dir, 'catalog.sqlite'),
        backupType: 'full',
        writers: [],
        paths: [source],
        stateDir: join(dir, 'state'),
        stagingDir: join(dir, 'staging'),
        resolveProvider: async () => ({ provider: copy, level: 'crash' }),
      });
      assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
      const tree = (await Catalog.load(repository, null)).find(report.id)!.tree;
      // What the set records, read from the copy provider's snapshot: the very nanoseconds.
      const exact = await findNode(repository, tree, `${source}/exact`);
      assert.equal(exact?.mtimeNs, FILE_NS.toString());
      assert.equal((await findNode(repository, tree, `${source}/link`))?.mtimeNs, LINK_NS.toString());
      assert.equal((await findNode(repository, tree, `${source}/sock`))?.type, 'socket');
      const one = await findNode(repository, tree, `${source}/a/one`);
      const three = await findNode(repository, tree, `${source}/b/three`);
      assert.ok(one?.type === 'file' && three?.type === 'file' && one.hardlink !== undefined);
      assert.equal(three.hardlink, one.hardlink);
      assert.deepEqual(three.content, one.content, 'the content is stored once');

      const target = join(dir, 'restored');
      const result = await restore({ repository, tree, target });
      assert.deepEqual(result.failed, []);
      const restored = join(target, source);
      await assertRestored(restored);
      assert.deepEqual(result.skipped, [{ path: `${source}/sock`, reason: 'socket ignored' }]);
      await assert.rejects(lstat(join(restored, 'sock')), { code: 'ENOENT' });
      if (asRoot) {
        const fifo = await lstat(join(restored, 'fifo'));
        assert.deepEqual([fifo.uid, fifo.gid], [1234, 5678]);
        const device = await lstat(join(restored, 'null'));
        assert.ok(device.isCharacterDevice(), 'the device is a character device again');
        assert.equal(device.rdev, (await lstat('/dev/null')).rdev);
        assert.equal(device.mode & 0o7777, 0o620);
        assert.equal(result.special, 2);
      }
    } finally {
      await repository.close();
    }
  });

  test(
    'as an unprivileged user: backup and restore keep the same, and a device of a root set is listed skipped',
    { skip: !asRoot && 'switching to an unprivileged user needs root' },
    async () => {
      const home = join(dir, 'nobody');
      await mkdir(home);
      await chown(home, NOBODY, NOBODY);
      const asNobody = (...args: string[]) => {
        const result = spawnSync(
          'setpriv',
          ['--reuid', `${NOBODY}`, '--regid', `${NOBODY}`, '--clear-groups', process.execPath, bin, ...args],
          {
            encoding: 'utf8',
            timeout: 120_000,
            cwd: home,
            env: { ...process.env, HOME: home, QUIESCE_PASSWORD: PASSWORD },
          },
        );
        return { code: result.status, stdout: result.stdout, stderr: result.stderr };
      };
      const config = (name: string, paths: string[]) =>
        [
          `repository: ${join(home, name)}`,
          `stateDir: ${join(home, `${name}-state`)}`,
          `stagingDir: ${join(home, `${name}-staging`)}`,
          `registrationDir: ${join(home, 'none')}`,
          `paths: [${paths.join(', ')}]`,
        ].join('\n');

      // A set made by nobody, of nobody's data.
      const source = join(home, 'data');
      await makeData(source, false);
      execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, source]);
      await writeFile(join(home, 'own.yaml'), config('own', [source]));
      const cfg = ['--config', join(home, 'own.yaml')];
      assert.equal(asNobody('init', ...cfg).code, 0);
      const backup = asNobody('backup', ...cfg);
      assert.equal(backup.code, 0, backup.stderr);
      const target = join(home, 'restored');
      const restored = asNobody('restore', 'latest', ...cfg, '--target', target);
      assert.equal(restored.code, 0, restored.stderr);
      await assertRestored(join(target, source));
      assert.match(restored.stderr, new RegExp(`skipped ${source}/sock: socket ignored`));

      // A set made by root, with a device: nobody restores the rest and lists the device skipped.
      const rootData = join(dir, 'root-data');
      await makeData(rootData, true);
      await writeFile(join(home, 'root.yaml'), config('root', [rootData]));
      const rootCfg = ['--config', join(home, 'root.yaml')];
      const run = (...args: string[]) =>
        spawnSync(process.execPath, [bin, ...args], {
          encoding: 'utf8',
          timeout: 120_000,
          env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
        });
      assert.equal(run('init', ...rootCfg).status, 0);
      const rootBackup = run('backup', ...rootCfg);
      assert.equal(rootBackup.status, 0, rootBackup.stderr);
      execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, join(home, 'root'), join(home, 'root-state')]);
      const rootTarget = join(home, 'root-restored');
      const text = asNobody('restore', 'latest', ...rootCfg, '--target', rootTarget);
      assert.equal(text.code, 0, 'a skipped device leaves the exit status alone');
      assert.match(text.stderr, new RegExp(`skipped ${rootData}/null: character device not restored`));
      assert.doesNotMatch(text.stderr, /\n\s+at /, 'no stack trace');
      await assertRestored(join(rootTarget, rootData));
      const json = asNobody('restore', 'latest', ...rootCfg, '--target', join(home, 'root-json'), '--json');
      assert.equal(json.code, 0, json.stderr);
      const skipped = (JSON.parse(json.stdout) as { skipped: { path: string; reason: string }[] }).skipped;
      assert.deepEqual(
        skipped.map((s) => s.path),
        [`${rootData}/null`, `${rootData}/sock`],
      );
    },
  );
});
