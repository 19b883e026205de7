// The snapshot providers against real file systems on loop devices (root only; each test says
// why when it skips), plus the choice of provider per path.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { QuiesceError } from '../src/model/index.ts';
import {
  BtrfsProvider,
  chooseProvider,
  CopyProvider,
  createProviders,
  FsfreezeProvider,
  listProviderSupport,
  ReflinkProvider,
} from '../src/providers/index.ts';
import { removeTree } from '../src/providers/fs-tree.ts';
import { findMount } from '../src/providers/mounts.ts';
import { findCommand, runCommand } from '../src/providers/run-command.ts';
import { makeLoopFs, type LoopFs } from './helpers/loop-fs.ts';
import { assertWritable, runProviderContract } from './provider-contract.ts';

const scratch = await mkdtemp(join(tmpdir(), 'quiesce-providers-'));
const loops = {
  xfs: await makeLoopFs('xfs', 320),
  xfsFreeze: await makeLoopFs('xfs', 320),
  btrfs: await makeLoopFs('btrfs', 256),
  ext4: await makeLoopFs('ext4', 64),
};
after(async () => {
  for (const loop of Object.values(loops)) if (!('skip' in loop)) await loop.cleanup();
  await removeTree(scratch);
});

async function run(command: string, args: string[]): Promise<void> {
  const path = await findCommand(command);
  assert.ok(path !== null, `${command} is installed`);
  await runCommand(path, args);
}

async function dirIn(base: string, name: string): Promise<string> {
  const dir = join(base, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Runs `body` with the loop file system, or registers a skipped test that prints why. */
function onLoop(title: string, loop: LoopFs | { skip: string }, body: (fs: LoopFs) => void): void {
  if ('skip' in loop) test(title, { skip: loop.skip }, () => {});
  else describe(title, () => body(loop));
}

const copyRoot = await dirIn(scratch, 'copy-root');
describe('copy on a plain directory', () => {
  runProviderContract('copy', () => new CopyProvider(), copyRoot, join(scratch, 'copy-staging'));
});

onLoop('reflink on XFS', loops.xfs, (fs) => {
  runProviderContract('reflink', () => new ReflinkProvider(), fs.workDir, join(scratch, 'unused-staging'));
});

onLoop('reflink on btrfs', loops.btrfs, (fs) => {
  runProviderContract('reflink', () => new ReflinkProvider(), fs.workDir, join(scratch, 'unused-staging'));
});

onLoop('btrfs on btrfs', loops.btrfs, (fs) => {
  runProviderContract('btrfs', () => new BtrfsProvider(), fs.workDir, join(scratch, 'unused-staging'));
});

onLoop('btrfs with nested subvolumes', loops.btrfs, (fs) => {
  test('takes one read-only snapshot per subvolume and maps each path into its own', async () => {
    const outer = await dirIn(fs.workDir, 'subvolumes');
    const nested = join(outer, 'nested');
    await run('btrfs', ['subvolume', 'create', nested]);
    await writeFile(join(outer, 'a'), 'outer');
    await writeFile(join(nested, 'b'), 'nested');
    const provider = new BtrfsProvider();
    const snapshot = await provider.commit({
      setId: 'nested-subvolumes',
      paths: [outer, join(nested, 'b'), fs.workDir],
      stagingDir: scratch,
    });
    try {
      const where = new Map(snapshot.paths.map((p) => [p.original, p.snapshot]));
      assert.equal(await readFile(join(where.get(outer)!, 'a'), 'utf8'), 'outer');
      assert.equal(await readFile(where.get(join(nested, 'b'))!, 'utf8'), 'nested');
      assert.deepEqual(
        await readdir(join(where.get(outer)!, 'nested')),
        [],
        "a nested subvolume is an empty directory in its parent's snapshot",
      );
      assert.equal(where.get(fs.workDir), join(fs.workDir, '.quiesce-snapshots', 'nested-subvolumes', 'snapshot'));
      await assert.rejects(writeFile(join(where.get(outer)!, 'a'), 'changed'), { code: 'EROFS' });
    } finally {
      await provider.release(snapshot);
      await run('btrfs', ['subvolume', 'delete', nested]);
    }
    await assert.rejects(readdir(join(fs.workDir, '.quiesce-snapshots')), { code: 'ENOENT' });
    await assert.rejects(readdir(join(nested, '.quiesce-snapshots')), { code: 'ENOENT' });
  });
});

onLoop('fsfreeze on XFS', loops.xfsFreeze, (fs) => {
  runProviderContract('fsfreeze', () => new FsfreezeProvider(), fs.workDir, join(scratch, 'fsfreeze-staging'));

  test('refuses a staging directory on the file system it would freeze', async () => {
    const data = await dirIn(fs.workDir, 'refuse-data');
    await writeFile(join(data, 'f'), 'x');
    const provider = new FsfreezeProvider();
    await assert.rejects(
      provider.commit({ setId: 'refuse-staging', paths: [data], stagingDir: join(fs.workDir, 'staging') }),
      (error: unknown) =>
        error instanceof QuiesceError && error.code === 'provider-failed' && /another file system/.test(error.message),
    );
    await assertWritable(join(data, 'still-writable'));
  });

  test('a frozen file system thaws at once when the process holding the freeze is killed', async () => {
    const child = await freezeInChild(fs.mountPoint, 120_000);
    const writer = spawn('sh', ['-c', 'echo after > "$1"', 'sh', join(fs.mountPoint, 'after-kill')]);
    try {
      await delay(500);
      assert.equal(writer.exitCode, null, 'a write blocks while the file system is frozen');
      const killedAt = performance.now();
      child.kill('SIGKILL');
      const code = await exitOf(writer, 10_000);
      const thawMs = performance.now() - killedAt;
      assert.equal(code, 0);
      assert.ok(thawMs < 5_000, `thawed ${thawMs.toFixed(0)} ms after the kill (the guardian's own timeout was 120 s)`);
      assert.equal(await readFile(join(fs.mountPoint, 'after-kill'), 'utf8'), 'after\n');
    } finally {
      child.kill('SIGKILL');
      writer.kill('SIGKILL');
    }
  });

  test('a frozen file system thaws after the timeout when the process holding the freeze hangs', async () => {
    const child = await freezeInChild(fs.mountPoint, 2_000);
    const frozenAt = performance.now();
    try {
      await assertWritable(join(fs.mountPoint, 'after-hang'), 15_000);
      const thawMs = performance.now() - frozenAt;
      assert.equal(child.exitCode, null, 'the process holding the freeze is still alive');
      assert.ok(thawMs > 1_000 && thawMs < 6_000, `thawed after ${thawMs.toFixed(0)} ms`);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('choosing a provider', () => {
  test('copy on a directory of the root file system', async (t) => {
    const dir = await dirIn(scratch, 'choose');
    const choice = await chooseProvider(dir, createProviders());
    assert.equal(choice.provider.name, 'copy');
    assert.deepEqual(
      choice.rejected.map((r) => r.name),
      ['btrfs', 'reflink', 'fsfreeze'],
    );
    for (const { name, support } of choice.rejected) t.diagnostic(`${name}: ${support.reason}`);
    if (process.getuid?.() === 0 && (await findMount(dir)).mountPoint === '/') {
      assert.match(choice.rejected[2]!.support.reason, /root file system/);
    }
  });

  test('every provider reports its support, in preference order', async () => {
    const entries = await listProviderSupport(scratch, [new CopyProvider(), ...createProviders().slice(0, 3)]);
    assert.deepEqual(
      entries.map((e) => e.name),
      ['btrfs', 'reflink', 'fsfreeze', 'copy'],
    );
    assert.equal(entries[3]!.support.ok, true);
    for (const { support } of entries) assert.ok(support.reason.length > 0);
  });

  onLoop('on btrfs', loops.btrfs, (fs) => {
    test('picks btrfs', async () => {
      const choice = await chooseProvider(join(fs.workDir, 'not-yet-created'), createProviders());
      assert.equal(choice.provider.name, 'btrfs');
      assert.equal(choice.support.level, 'crash');
    });
  });

  onLoop('on XFS', loops.xfs, (fs) => {
    test('picks reflink, and says why not btrfs', async () => {
      const choice = await chooseProvider(fs.workDir, createProviders());
      assert.equal(choice.provider.name, 'reflink');
      assert.deepEqual(
        choice.rejected.map((r) => r.name),
        ['btrfs'],
      );
      assert.match(choice.rejected[0]!.support.reason, /xfs, not btrfs/);
    });

    test('honours a forced provider, and refuses one that cannot serve', async () => {
      assert.equal(
        (await chooseProvider(fs.workDir, createProviders(), { force: 'fsfreeze' })).provider.name,
        'fsfreeze',
      );
      await assert.rejects(
        chooseProvider(fs.workDir, createProviders(), { force: 'btrfs' }),
        (error: unknown) => error instanceof QuiesceError && error.code === 'provider-failed',
      );
      await assert.rejects(
        chooseProvider(fs.workDir, [new CopyProvider()], { force: 'btrfs' }),
        (error: unknown) => error instanceof QuiesceError && error.code === 'bad-usage',
      );
    });
  });

  onLoop('on ext4', loops.ext4, (fs) => {
    test('picks fsfreeze where nothing clones', async () => {
      const choice = await chooseProvider(fs.workDir, createProviders());
      assert.equal(choice.provider.name, 'fsfreeze');
      assert.equal(choice.support.level, 'filesystem');
      assert.match(choice.rejected[1]!.support.reason, /cannot clone/);
    });
  });
});

/** Starts a node process that freezes `mountPoint` through the provider's guardian, then idles. */
async function freezeInChild(mountPoint: string, maxFrozenMs: number): Promise<ChildProcess> {
  const guardianUrl = pathToFileURL(join(import.meta.dirname, '../src/providers/fsfreeze/freeze-guardian.ts')).href;
  const options = {
    maxFrozenMs,
    fsfreeze: await findCommand('fsfreeze'),
    timeout: await findCommand('timeout'),
  };
  const code = `
    import { freezeWithGuardian } from ${JSON.stringify(guardianUrl)};
    await freezeWithGuardian(${JSON.stringify(mountPoint)}, ${JSON.stringify(options)});
    console.log('child-frozen');
    setInterval(() => {}, 60_000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the child did not freeze ${mountPoint} in time: ${output}`)),
      20_000,
    );
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      if (output.includes('child-frozen')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (exitCode) => {
      clearTimeout(timer);
      reject(new Error(`the child exited (${exitCode}) before freezing: ${output}`));
    });
  });
  return child;
}

function exitOf(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no exit within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
