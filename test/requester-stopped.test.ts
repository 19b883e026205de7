// A stopped or killed requester cannot prolong a SQLite writer's freeze: the write lock is held by
// a child process (src/writers/sqlite/lock-holder.ts) that lets go at the thaw deadline when the
// `quiesce backup` process holding the writer is SIGSTOPped, and at once when it is SIGKILLed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { checkBank, createBank, startBankLoad, TOTAL } from '../src/cli/demo/bank.ts';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const PASSWORD = 'a long and secret password';
const FREEZE_TIMEOUT_MS = 2000;
let dir: string;
let db: string;
let marker: string;
let config: string;
const children: ChildProcess[] = [];

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

async function writeConfig(name: string, lines: string[]): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      ...lines,
    ].join('\n'),
  );
  return file;
}

/** One write transaction that keeps the bank's sum, with SQLite's own busy wait; answers when it committed. */
function transfer(timeoutMs: number): number {
  const connection = new Database(db, { timeout: timeoutMs });
  try {
    connection.exec('BEGIN IMMEDIATE');
    connection.exec('UPDATE accounts SET balance = balance - 1 WHERE id = 0');
    connection.exec('UPDATE accounts SET balance = balance + 1 WHERE id = 1');
    connection.exec('COMMIT');
    return performance.now();
  } finally {
    connection.close();
  }
}

/** Whether the database's write lock is held by someone else right now. */
function locked(): boolean {
  try {
    transfer(0);
    return false;
  } catch (error) {
    if (String((error as { code?: unknown }).code).startsWith('SQLITE_BUSY')) return true;
    throw error;
  }
}

/** Starts `quiesce backup` and answers once it is frozen: the system-level exec writer's freeze (after SQLite's) touched the marker. */
async function backupFrozen(): Promise<{ child: ChildProcess; frozenAt: number }> {
  await rm(marker, { force: true });
  const child = spawn(process.execPath, [bin, 'backup', '--config', config, '--json', '--wait', '60'], {
    env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  children.push(child);
  const until = Date.now() + 60_000;
  while (!existsSync(marker)) {
    assert.ok(Date.now() < until, 'the set reached its freeze');
    assert.equal(child.exitCode, null, 'quiesce backup is still running');
    await sleep(5);
  }
  const frozenAt = performance.now();
  assert.equal(locked(), true, 'the SQLite writer holds the write lock while frozen');
  return { child, frozenAt };
}

async function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-stopped-'));
  await mkdir(join(dir, 'data'));
  db = join(dir, 'data', 'bank.db');
  marker = join(dir, 'frozen');
  createBank(db);
  config = await writeConfig('stopped', [
    `policy: { freezeTimeout: ${FREEZE_TIMEOUT_MS / 1000}s }`,
    'writers:',
    `  - { type: sqlite, name: bank, path: ${db} }`,
    `  - { type: exec, name: slow, usage: system, freeze: [/bin/sh, -c, "touch ${marker}; sleep 5"], thaw: [/bin/true] }`,
  ]);
  const init = quiesce('init', '--config', config);
  assert.equal(init.code, 0, init.stderr);
});
after(async () => {
  for (const child of children) await killed(child);
  // The exec writer's `sleep` runs in its own process group; it ends by itself within 5 s.
  await rm(dir, { recursive: true, force: true });
});

describe('a stopped or killed requester and an in-process SQLite writer', () => {
  test(`SIGSTOP while frozen: the database is writable again by the deadline (${FREEZE_TIMEOUT_MS} ms) + 1 s, 5 times`, async (t) => {
    const waits: number[] = [];
    for (let run = 0; run < 5; run++) {
      const { child, frozenAt } = await backupFrozen();
      child.kill('SIGSTOP');
      const wroteAt = transfer(10_000);
      waits.push(wroteAt - frozenAt);
      await killed(child);
    }
    t.diagnostic(`frozen to writable with the requester stopped: ${waits.map((ms) => ms.toFixed(0)).join(', ')} ms`);
    for (const wait of waits) assert.ok(wait < FREEZE_TIMEOUT_MS + 1000, `writable after ${wait.toFixed(0)} ms`);
  });

  test('SIGKILL while frozen: the database is writable again at once', async () => {
    for (let run = 0; run < 3; run++) {
      const { child } = await backupFrozen();
      const killedAt = performance.now();
      await killed(child);
      const wait = transfer(10_000) - killedAt;
      assert.ok(wait < 500, `writable ${wait.toFixed(0)} ms after the kill`);
    }
  });

  test('a set under load still takes a transaction-consistent snapshot', async () => {
    const good = await writeConfig('good', [
      'policy: { freezeTimeout: 10s }',
      'writers:',
      `  - { type: sqlite, name: bank, path: ${db} }`,
    ]);
    const out = join(dir, 'out');
    const load = await startBankLoad(db, 3);
    let r;
    try {
      r = quiesce(
        'snapshot',
        '--config',
        good,
        '--wait',
        '60',
        '--',
        `mkdir -p ${out} && cp "$QUIESCE_SNAPSHOT_ROOT${db}" ${out}/ && (cp "$QUIESCE_SNAPSHOT_ROOT${db}-wal" ${out}/ || true)`,
      );
    } finally {
      const stats = await load.stop();
      assert.equal(
        stats.reduce((n, s) => n + s.errors, 0),
        0,
        'the application saw no errors',
      );
    }
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /application/);
    const check = await checkBank(join(out, 'bank.db'));
    assert.equal(check.integrity, 'ok');
    assert.equal(check.sum, TOTAL);
    assert.equal((await checkBank(db)).sum, TOTAL);
  });
});
