// What a killed set leaves is cleaned by the next set on the host: `quiesce backup` SIGKILLed in
// the middle of its sets (copy into the staging directory, reflink clones on XFS, btrfs snapshots
// on loop devices as root) leaves staging copies, snapshot set directories and an exec writer's
// background child; the next set removes every one, keeps a `--keep` set, and `quiesce snapshot
// --list` says what it cleaned.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeLoopFs } from './helpers/loop-fs.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const PASSWORD = 'a long and secret password';
const KILLS = 5;
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function quiesce(config: string, ...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args, '--config', config], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Bytes on disk under `path`, as `du` counts them (0 when it is gone). */
async function du(path: string): Promise<number> {
  const stats = await lstat(path).catch(() => null);
  if (stats === null) return 0;
  let bytes = stats.blocks * 512;
  if (stats.isDirectory()) for (const name of await readdir(path)) bytes += await du(join(path, name));
  return bytes;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie waiting for a reaper is dead.
  try {
    const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout;
    return !/\) Z /.test(stat);
  } catch {
    return true;
  }
}

/** The set directories (named by set id) under the stores, but `keep`. */
async function leftovers(stores: string[], keep: string): Promise<string[]> {
  const found: string[] = [];
  for (const store of stores) {
    for (const name of await readdir(store).catch(() => [] as string[])) {
      if (name !== keep && !name.startsWith('.probe')) found.push(join(store, name));
    }
  }
  return found;
}

interface Place {
  provider: 'copy' | 'reflink' | 'btrfs';
  data: string;
  /** Where the provider puts a set's directory. */
  store: string;
}

async function placeFor(provider: Place['provider'], work: string): Promise<Place | { skip: string }> {
  if (provider === 'copy') {
    const data = join(work, 'data');
    await mkdir(data);
    return { provider, data, store: join(work, 'staging') };
  }
  const fs = await makeLoopFs(provider === 'btrfs' ? 'btrfs' : 'xfs', 1024);
  if ('skip' in fs) return fs;
  cleanups.push(() => fs.cleanup());
  const data = join(fs.workDir, 'data');
  await mkdir(data);
  return { provider, data, store: join(fs.workDir, '.quiesce-snapshots') };
}

describe('the next set cleans what killed sets left', () => {
  for (const provider of ['copy', 'reflink', 'btrfs'] as const) {
    test(`${provider}: ${KILLS} kills of quiesce backup mid-set, then one set cleans every leftover`, async (t) => {
      const work = await mkdtemp(join(tmpdir(), `quiesce-dead-${provider}-`));
      cleanups.push(() => rm(work, { recursive: true, force: true }));
      const place = await placeFor(provider, work);
      if ('skip' in place) {
        t.skip(place.skip);
        return;
      }
      for (let i = 0; i < 6; i++) await writeFile(join(place.data, `file-${i}.bin`), randomBytes(8 << 20));
      const pids = join(work, 'children');
      const config = join(work, 'quiesce.yaml');
      await writeFile(
        config,
        [
          `repository: ${join(work, 'repo')}`,
          `stateDir: ${join(work, 'state')}`,
          `stagingDir: ${join(work, 'staging')}`,
          `registrationDir: ${join(work, 'none')}`,
          // Copied inside the freeze, so that every set leaves a copy to clean up when killed.
          'policy: { plainPaths: in-freeze }',
          'writers:',
          // A freeze script that leaves a background child behind, as a careless one does.
          `  - { type: exec, name: careless, freeze: [/bin/sh, -c, "sleep 600 </dev/null >/dev/null 2>&1 & echo $! >> ${pids}"], thaw: [/bin/true] }`,
          `paths: [${place.data}]`,
          `providers: { ${place.data}: ${provider} }`,
        ].join('\n'),
      );
      const init = quiesce(config, 'init');
      assert.equal(init.code, 0, init.stderr);
      const keep = quiesce(config, 'snapshot', '--keep', '--json');
      assert.equal(keep.code, 0, keep.stderr);
      const kept = (JSON.parse(keep.stdout) as { id: string }).id;
      const keptBytes = await du(join(place.store, kept));
      assert.ok(keptBytes > 0 || provider === 'btrfs', 'the kept set holds its copy');

      const stores = [...new Set([place.store, join(work, 'staging')])];
      for (let kill = 0; kill < KILLS; kill++) {
        const before = new Set(await leftovers(stores, kept));
        const child = spawn(process.execPath, [bin, 'backup', '--config', config, '--json'], {
          env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
          stdio: ['ignore', 'ignore', 'ignore'],
        });
        const exited = new Promise((resolve) => child.once('exit', resolve));
        // The middle of the set: its snapshot directory exists (commit under way, or the backup reading it).
        const until = Date.now() + 120_000;
        for (;;) {
          const now = await leftovers(stores, kept);
          if (now.some((dir) => !before.has(dir))) break;
          assert.ok(Date.now() < until && child.exitCode === null, 'the set reached its commit');
          await sleep(5);
        }
        await sleep(Math.floor(Math.random() * 150));
        child.kill('SIGKILL');
        await exited;
      }
      const left = await leftovers(stores, kept);
      let leftBytes = 0;
      for (const dir of left) leftBytes += await du(dir);
      const children = (await readFile(pids, 'utf8')).split('\n').filter(Boolean).map(Number);
      assert.ok(left.length >= 1, 'the last killed set left its snapshot');
      assert.ok(children.some(alive), "the killed sets' scripts left children running");

      const next = quiesce(config, 'backup', '--json');
      assert.equal(next.code, 0, next.stdout + next.stderr);
      const after = await leftovers(stores, kept);
      assert.deepEqual(after, [], 'no staging copy or snapshot of a dead set is left');
      let afterBytes = 0;
      for (const dir of after) afterBytes += await du(dir);
      t.diagnostic(
        `${provider}: ${left.length} leftover(s), ${leftBytes} bytes before the next set, ${afterBytes} after`,
      );
      assert.equal(await du(join(place.store, kept)), keptBytes, 'the kept set is untouched');
      await sleep(200);
      const deadChildren = children.slice(1); // the first is the kept set's, a set that ended well: left alone
      for (const pid of deadChildren) assert.equal(alive(pid), false, `the dead sets' child ${pid} was ended`);
      assert.equal(
        existsSync(join(work, 'state', 'running')) ? (await readdir(join(work, 'state', 'running'))).length : 0,
        0,
      );

      const list = quiesce(config, 'snapshot', '--list', '--json');
      assert.equal(list.code, 0, list.stderr);
      const listed = JSON.parse(list.stdout) as {
        sets: { setId: string }[];
        lastCleanup: { at: string; bytes: number; sets: { removed: string[]; processes: number }[] } | null;
      };
      assert.deepEqual(
        listed.sets.map((s) => s.setId),
        [kept],
        'the kept set is still listed',
      );
      assert.ok(listed.lastCleanup, 'the last cleanup is listed');
      assert.ok(Date.now() - Date.parse(listed.lastCleanup.at) < 120_000);
      assert.ok(listed.lastCleanup.bytes > 0 || provider === 'btrfs');
      const removed = listed.lastCleanup.sets.flatMap((s) => s.removed);
      for (const dir of left) assert.ok(removed.includes(dir), `${dir} is listed as removed`);
      const text = quiesce(config, 'snapshot', '--list');
      assert.match(text.stdout, /last cleanup of dead sets: .* freed/);
      assert.match(text.stdout, /removed /);

      const release = quiesce(config, 'snapshot', '--release', kept);
      assert.equal(release.code, 0, release.stderr);
      // The children of the sets that ended well (the kept one, the last one) are the test's to end.
      for (const pid of (await readFile(pids, 'utf8')).split('\n').filter(Boolean).map(Number)) {
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      }
    });
  }
});
