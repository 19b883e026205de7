import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../model/index.ts';
import { processAlive } from '../../util/index.ts';
import type { HandlerContext } from '../sdk/definition.ts';
import { createExecWriter } from './exec-writer.ts';
import { isIgnoredHookName } from './hooks-dir.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-exec-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let dirCount = 0;
async function freshDir(): Promise<{ dir: string; hooks: string; log: string }> {
  const dir = join(root, `d${dirCount++}`);
  const hooks = join(dir, 'hooks.d');
  await mkdir(hooks, { recursive: true });
  return { dir, hooks, log: join(dir, 'calls.log') };
}

function ctx(setId: string, signal: AbortSignal = new AbortController().signal): HandlerContext {
  return { setId, signal };
}

/** A script that appends "<label> <arg> <phase> <set> <writer>" to the log, then runs `body`. */
async function script(path: string, log: string, label: string, body = '', mode = 0o755): Promise<string> {
  await writeFile(
    path,
    `#!/bin/sh\necho "${label} $1 $QUIESCE_PHASE $QUIESCE_SET_ID $QUIESCE_WRITER $EXTRA" >> "${log}"\n${body}\n`,
  );
  await chmod(path, mode);
  return path;
}

async function calls(log: string): Promise<string[]> {
  try {
    return (await readFile(log, 'utf8'))
      .split('\n')
      .map((line) => line.replace(/\s+/g, ' ').trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** Alive and not a zombie (a container's init may not reap orphans at once). */
function alive(pid: number): boolean {
  if (!processAlive(pid)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function waitForFile(path: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    try {
      const text = (await readFile(path, 'utf8')).trim();
      if (text) return text;
    } catch {
      // not yet
    }
    await sleep(10);
  }
  throw new Error(`${path} never appeared`);
}

describe('exec writer: order and vetoes', () => {
  it('freezes the pair then the hooks by name, and thaws in reverse, skipping what is not a hook', async () => {
    const { dir, hooks, log } = await freshDir();
    const freeze = await script(join(dir, 'pause'), log, 'pair-freeze');
    const thaw = await script(join(dir, 'resume'), log, 'pair-thaw');
    await script(join(hooks, '20-b'), log, 'b');
    await script(join(hooks, '10-a'), log, 'a');
    await script(join(hooks, '05-c'), log, 'c');
    await script(join(hooks, '15-not-executable'), log, 'not-executable', '', 0o644);
    await script(join(hooks, '30-backup~'), log, 'tilde');
    await script(join(hooks, '40-hook.dpkg-old'), log, 'dpkg');
    await script(join(hooks, '.hidden'), log, 'hidden');
    await mkdir(join(hooks, '50-directory'));

    const writer = createExecWriter({
      name: 'cache',
      freeze: [freeze],
      thaw: [thaw],
      hooksDir: hooks,
      env: { EXTRA: 'x1' },
    });
    await writer.freeze(ctx('set-1'));
    assert.deepEqual(await calls(log), [
      'pair-freeze freeze set-1 cache x1',
      'c freeze freeze set-1 cache x1',
      'a freeze freeze set-1 cache x1',
      'b freeze freeze set-1 cache x1',
    ]);
    await writer.thaw(ctx('set-1'));
    assert.deepEqual((await calls(log)).slice(4), [
      'b thaw thaw set-1 cache x1',
      'a thaw thaw set-1 cache x1',
      'c thaw thaw set-1 cache x1',
      'pair-thaw thaw set-1 cache x1',
    ]);
    await writer.thaw(ctx('set-1'));
    await writer.abort!(ctx('set-1'));
    assert.equal((await calls(log)).length, 8, 'a second thaw (or an abort after thaw) runs nothing');

    const metadata = typeof writer.metadata === 'function' ? await writer.metadata() : writer.metadata;
    assert.equal(metadata.classId, 'quiesce.exec');
    assert.equal(metadata.instanceId, hooks);
    assert.equal(metadata.usage, 'front-end');
    assert.deepEqual(metadata.components, []);
    assert.deepEqual(metadata.backupTypes, ['full', 'copy', 'incremental', 'differential', 'log']);
  });

  it('vetoes when a freeze hook fails, carrying its stderr, and thaws what was started in reverse', async () => {
    const { dir, hooks, log } = await freshDir();
    const freeze = await script(join(dir, 'pause'), log, 'pair-freeze');
    const thaw = await script(join(dir, 'resume'), log, 'pair-thaw');
    await script(join(hooks, '10-a'), log, 'a');
    await script(
      join(hooks, '20-b'),
      log,
      'b',
      'if [ "$1" = freeze ]; then echo "flushing tables" >&2; echo "boom: cannot flush" >&2; exit 3; fi',
    );
    await script(join(hooks, '30-c'), log, 'c');
    const writer = createExecWriter({ name: 'db', freeze: [freeze], thaw: [thaw], hooksDir: hooks });

    await assert.rejects(writer.freeze(ctx('set-2')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'nonretryable');
      assert.equal(error.phase, 'freeze');
      assert.equal(error.writer, 'db');
      assert.match(error.message, /20-b/);
      assert.match(error.message, /exited with code 3/);
      assert.match(error.message, /flushing tables\nboom: cannot flush/);
      return true;
    });
    assert.deepEqual(await calls(log), [
      'pair-freeze freeze set-2 db',
      'a freeze freeze set-2 db',
      'b freeze freeze set-2 db',
      // The failing hook's freeze was started, so it is thawed too; 30-c never started.
      'b thaw thaw set-2 db',
      'a thaw thaw set-2 db',
      'pair-thaw thaw set-2 db',
    ]);
    await writer.thaw(ctx('set-2'));
    assert.equal((await calls(log)).length, 6, 'nothing is left to thaw after a veto');
  });

  it('runs every thaw even when some fail, then reports all the failures in one error', async () => {
    const { hooks, log } = await freshDir();
    await script(join(hooks, '10-a'), log, 'a', 'if [ "$1" = thaw ]; then echo "a cannot resume" >&2; exit 1; fi');
    await script(join(hooks, '20-b'), log, 'b');
    await script(join(hooks, '30-c'), log, 'c', 'if [ "$1" = thaw ]; then echo "c cannot resume" >&2; exit 2; fi');
    const writer = createExecWriter({ name: 'multi', hooksDir: hooks });
    await writer.freeze(ctx('set-7'));
    await assert.rejects(writer.thaw(ctx('set-7')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'nonretryable');
      assert.match(error.message, /2 thaw step\(s\) failed/);
      assert.match(error.message, /30-c exited with code 2: c cannot resume/);
      assert.match(error.message, /10-a exited with code 1: a cannot resume/);
      return true;
    });
    assert.deepEqual((await calls(log)).slice(3), [
      'c thaw thaw set-7 multi',
      'b thaw thaw set-7 multi',
      'a thaw thaw set-7 multi',
    ]);
  });
});

describe('exec writer: configuration and hook names', () => {
  it('recognises the names the fsfreeze-hook convention ignores', () => {
    for (const name of ['x~', 'x.dpkg-old', 'x.dpkg-dist', 'x.dpkg-new', 'x.rpmsave', 'x.bak', '.x'])
      assert.ok(isIgnoredHookName(name), name);
    for (const name of ['10-mysql', 'postgres', 'a.sh']) assert.ok(!isIgnoredHookName(name), name);
  });

  it('reports configuration mistakes clearly', async () => {
    const { dir } = await freshDir();
    assert.throws(() => createExecWriter({ name: 'empty' }), { code: 'bad-config' });
    const missingDir = createExecWriter({ name: 'nodir', hooksDir: join(dir, 'no-such-dir') });
    await assert.rejects(missingDir.freeze(ctx('set-8')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'nonretryable');
      assert.match(error.message, /no-such-dir.*hooksDir/);
      return true;
    });
    const missingScript = createExecWriter({
      name: 'noscript',
      freeze: [join(dir, 'no-such-script')],
      thaw: ['/bin/true'],
    });
    await assert.rejects(missingScript.freeze(ctx('set-9')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'nonretryable');
      assert.match(error.message, /no-such-script could not be started/);
      return true;
    });
  });
});

describe('exec writer: time limits and cancellation', () => {
  it('kills the whole process group of a script that runs past its time limit', async () => {
    const { hooks, log, dir } = await freshDir();
    const childPid = join(dir, 'child.pid');
    await script(join(hooks, '10-a'), log, 'a');
    await script(
      join(hooks, '20-hang'),
      log,
      'hang',
      `if [ "$1" = freeze ]; then sleep 60 & echo $! > "${childPid}"; sleep 60; fi`,
    );
    const writer = createExecWriter({ name: 'slow', hooksDir: hooks, timeoutMs: 300 });
    const started = performance.now();
    await assert.rejects(writer.freeze(ctx('set-3')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'timeout');
      assert.match(error.message, /20-hang did not finish within 300 ms/);
      return true;
    });
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 2000, `the group died on SIGTERM (${elapsed} ms)`);
    const pid = Number(await waitForFile(childPid));
    assert.ok(!alive(pid), "the script's background child was killed with it");
    assert.deepEqual(await calls(log), [
      'a freeze freeze set-3 slow',
      'hang freeze freeze set-3 slow',
      'hang thaw thaw set-3 slow',
      'a thaw thaw set-3 slow',
    ]);
  });

  it('sends SIGKILL 2 s after SIGTERM to a group that ignores SIGTERM', async () => {
    const { hooks, log, dir } = await freshDir();
    const childPid = join(dir, 'child.pid');
    await script(
      join(hooks, '10-stubborn'),
      log,
      'stubborn',
      `if [ "$1" = freeze ]; then trap '' TERM; sleep 60 & echo $! > "${childPid}"; sleep 60; fi`,
    );
    const writer = createExecWriter({ name: 'stubborn', hooksDir: hooks, timeoutMs: 200 });
    const started = performance.now();
    await assert.rejects(writer.freeze(ctx('set-4')), { code: 'timeout' });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 2100 && elapsed < 4000, `SIGKILL came after the grace period (${elapsed} ms)`);
    assert.ok(!alive(Number(await waitForFile(childPid))));
  });

  it("honours the set's signal: a cancelled freeze kills the running script and thaws", async () => {
    const { dir, log } = await freshDir();
    const childPid = join(dir, 'child.pid');
    const freeze = await script(join(dir, 'pause'), log, 'freeze', `sleep 60 & echo $! > "${childPid}"; sleep 60`);
    const thaw = await script(join(dir, 'resume'), log, 'thaw');
    const writer = createExecWriter({ name: 'pair', freeze: [freeze], thaw: [thaw] });

    const controller = new AbortController();
    setTimeout(() => controller.abort(new QuiesceError('retryable', 'set aborted')), 200);
    await assert.rejects(writer.freeze(ctx('set-5', controller.signal)), { code: 'retryable' });
    assert.ok(!alive(Number(await waitForFile(childPid))));

    await rm(childPid);
    await assert.rejects(writer.freeze(ctx('set-6', AbortSignal.timeout(200))), { code: 'timeout' });
    assert.ok(!alive(Number(await waitForFile(childPid))));
    assert.deepEqual(await calls(log), [
      'freeze freeze set-5 pair',
      'thaw thaw set-5 pair',
      'freeze freeze set-6 pair',
      'thaw thaw set-6 pair',
    ]);
  });
});
