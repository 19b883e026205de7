// Never left frozen: SQLite writers in their own processes are frozen by a requester that is then
// killed with SIGKILL, or stopped (it hangs). Each writer thaws within its deadline plus one second
// and the application's writes resume.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { connectWriter } from '../src/rpc/index.ts';
import { createBank } from '../src/cli/demo/bank.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const FREEZE_TIMEOUT_MS = 2_000;
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-never-frozen-'));
});
after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function startWriter(name: string, dbPath: string, socket: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(repoRoot, 'test/fixtures/serve-sqlite-writer.ts'),
      name,
      dbPath,
      socket,
      join(dir, 'writer-state'),
    ],
    {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`writer ${name} exited with ${code}`)));
  });
}

/** Waits until the writer's state (asked over its socket) is `state`. */
async function waitForState(socket: string, state: string, timeoutMs: number): Promise<void> {
  const client = connectWriter(socket, { callTimeoutMs: 1_000 });
  try {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const status = await client.status();
      if (status.state === state) return;
      if (Date.now() > until) throw new Error(`writer at ${socket} is ${status.state}, not ${state}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await client.close();
  }
}

/** Milliseconds until one application write commits on `dbPath` (the app waits on the lock, as it would). */
async function timeUntilWrite(dbPath: string, limitMs: number): Promise<number> {
  const db = new Database(dbPath);
  db.pragma('busy_timeout = 50');
  const t0 = performance.now();
  try {
    for (;;) {
      try {
        db.prepare('UPDATE accounts SET balance = balance WHERE id = 0').run();
        return performance.now() - t0;
      } catch (error) {
        if (performance.now() - t0 > limitMs)
          throw new Error(`no write got through in ${limitMs} ms: ${String(error)}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  } finally {
    db.close();
  }
}

async function scenario(kill: 'SIGKILL' | 'SIGSTOP'): Promise<{ resumeMs: number[]; frozenFor: number }> {
  const tag = kill.toLowerCase();
  const dbs = [join(dir, `${tag}-a.db`), join(dir, `${tag}-b.db`)];
  const sockets = [join(dir, 'sock', `${tag}-a.sock`), join(dir, 'sock', `${tag}-b.sock`)];
  dbs.forEach((db) => createBank(db));
  const writers = await Promise.all(dbs.map((db, i) => startWriter(`${tag}-${i}`, db, sockets[i]!)));
  // The system-level exec writer freezes last and never returns: the requester sits in freeze
  // with both SQLite writers frozen.
  const hooks = join(dir, `${tag}-hooks`);
  await mkdir(hooks);
  const stuck = join(hooks, '10-stuck');
  await writeFile(stuck, '#!/bin/sh\n[ "$1" = freeze ] && exec sleep 20\nexit 0\n');
  await chmod(stuck, 0o755);
  const config = join(dir, `${tag}.yaml`);
  await writeFile(
    config,
    [
      `stateDir: ${join(dir, `${tag}-state`)}`,
      `stagingDir: ${join(dir, `${tag}-staging`)}`,
      `registrationDir: ${join(dir, 'empty-registration')}`,
      `policy: { quiesce: require, freezeTimeout: ${FREEZE_TIMEOUT_MS}ms }`,
      'writers:',
      ...sockets.map((s, i) => `  - { type: remote, name: w${i}, socket: ${s} }`),
      `  - { type: exec, name: stuck, hooksDir: ${hooks}, usage: system, timeout: 60s }`,
    ].join('\n'),
  );
  const requester = spawn(process.execPath, [join(repoRoot, 'bin/quiesce.js'), 'snapshot', '--config', config], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(requester);
  await Promise.all(sockets.map((s) => waitForState(s, 'waiting-for-thaw', 15_000)));
  const frozenAt = performance.now();
  requester.kill(kill);
  const resumeMs = await Promise.all(dbs.map((db) => timeUntilWrite(db, FREEZE_TIMEOUT_MS + 5_000)));
  const frozenFor = performance.now() - frozenAt;
  if (kill === 'SIGSTOP') requester.kill('SIGKILL');
  for (const w of writers) w.kill('SIGTERM');
  return { resumeMs, frozenFor };
}

describe('never left frozen', () => {
  test('requester killed with SIGKILL while writers in other processes are frozen: they thaw at once', async (t) => {
    const { resumeMs } = await scenario('SIGKILL');
    t.diagnostic(`writes resumed ${resumeMs.map((ms) => Math.round(ms)).join(', ')} ms after SIGKILL`);
    for (const ms of resumeMs) assert.ok(ms < FREEZE_TIMEOUT_MS + 1_000, `writes resumed after ${Math.round(ms)} ms`);
  });

  test('requester hangs (SIGSTOP) while writers are frozen: they thaw by their deadline plus one second', async (t) => {
    const { resumeMs } = await scenario('SIGSTOP');
    t.diagnostic(
      `writes resumed ${resumeMs.map((ms) => Math.round(ms)).join(', ')} ms after SIGSTOP (deadline ${FREEZE_TIMEOUT_MS} ms)`,
    );
    for (const ms of resumeMs)
      assert.ok(ms < FREEZE_TIMEOUT_MS + 1_000, `writes resumed ${Math.round(ms)} ms after the requester hung`);
  });
});
