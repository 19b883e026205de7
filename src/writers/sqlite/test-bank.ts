// The bank the SQLite writer's tests quiesce: a database of accounts whose total never changes,
// application threads moving money in it, and copies taken as a provider would take them.
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { HandlerContext } from '../sdk/definition.ts';

/** The better-sqlite3 module's path, for worker threads that open the database themselves. */
export const betterSqlite3 = createRequire(import.meta.url).resolve('better-sqlite3');
export const ACCOUNTS = 100;
export const START_BALANCE = 1000;

/**
 * A new empty directory per call, all under one temporary directory that is removed after the
 * test file. Call it at the top level of a test file (it registers the file's before and after).
 */
export function scratchDirs(): () => Promise<string> {
  let root: string;
  let dirCount = 0;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'quiesce-sqlite-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  return async () => {
    const dir = join(root, `d${dirCount++}`);
    await mkdir(dir, { recursive: true });
    return dir;
  };
}

export function ctx(setId: string, signal: AbortSignal = new AbortController().signal): HandlerContext {
  return { setId, signal };
}

export function createBank(path: string, journalMode: 'wal' | 'delete'): void {
  const db = new Database(path);
  db.pragma(`journal_mode = ${journalMode}`);
  db.exec(
    'CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL); CREATE TABLE transfer (id INTEGER PRIMARY KEY, at INTEGER)',
  );
  const insert = db.prepare('INSERT INTO account VALUES (?, ?)');
  db.transaction(() => {
    for (let id = 0; id < ACCOUNTS; id++) insert.run(id, START_BALANCE);
  })();
  db.close();
}

/**
 * An application thread moving money between accounts in `BEGIN IMMEDIATE` transactions with a
 * 10 s busy timeout, as fast as it can (or with `pauseMs` between transactions).
 * Shared counters: [0] stop flag, [1 + i] commits of worker i, [8] errors.
 */
const BANK_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path, { timeout: 10000 });
const stats = workerData.stats;
const debit = db.prepare('UPDATE account SET balance = balance - ? WHERE id = ?');
const credit = db.prepare('UPDATE account SET balance = balance + ? WHERE id = ?');
const log = db.prepare('INSERT INTO transfer (at) VALUES (?)');
const pause = new Int32Array(new SharedArrayBuffer(4));
while (Atomics.load(stats, 0) === 0) {
  try {
    db.exec('BEGIN IMMEDIATE');
    const from = Math.floor(Math.random() * ${ACCOUNTS});
    const to = Math.floor(Math.random() * ${ACCOUNTS});
    const amount = 1 + Math.floor(Math.random() * 50);
    debit.run(amount, from);
    credit.run(amount, to);
    log.run(Date.now());
    db.exec('COMMIT');
    Atomics.add(stats, 1 + workerData.index, 1);
  } catch (error) {
    Atomics.add(stats, 8, 1);
    parentPort.postMessage(String(error && error.message));
    try { db.exec('ROLLBACK'); } catch {}
  }
  if (workerData.pauseMs > 0) Atomics.wait(pause, 0, 0, workerData.pauseMs);
}
db.close();
`;

export async function withBankWorkers<T>(
  path: string,
  count: number,
  pauseMs: number,
  body: (stats: Int32Array) => Promise<T>,
): Promise<{ result: T; errors: string[]; stats: Int32Array }> {
  const stats = new Int32Array(new SharedArrayBuffer(4 * 16));
  const errors: string[] = [];
  const workers = Array.from({ length: count }, (_, index) => {
    const worker = new Worker(BANK_WORKER, {
      eval: true,
      workerData: { module: betterSqlite3, path, stats, index, pauseMs },
    });
    worker.on('message', (message: string) => errors.push(message));
    worker.on('error', (error) => errors.push(String(error)));
    return worker;
  });
  const exited = workers.map((worker) => new Promise((resolve) => worker.once('exit', resolve)));
  try {
    // Let the workers get going before the first freeze (in rollback mode one may starve the others a while).
    const startBy = performance.now() + 2000;
    while (Array.from({ length: count }, (_, i) => stats[1 + i]!).some((n) => n === 0) && performance.now() < startBy)
      await sleep(5);
    assert.ok(commits(stats) > 0, 'the application is running');
    const result = await body(stats);
    return { result, errors, stats };
  } finally {
    Atomics.store(stats, 0, 1);
    await Promise.all(exited);
  }
}

export const commits = (stats: Int32Array): number => stats.slice(1, 8).reduce((sum, n) => sum + n, 0);

export async function copyIfExists(from: string, to: string): Promise<void> {
  try {
    await copyFile(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Copies the database and its -wal/-journal, as a provider would while the writer is frozen. */
export async function snapshotFiles(dbPath: string, dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const target = join(dir, name);
  await copyFile(dbPath, target);
  await copyIfExists(`${dbPath}-wal`, `${target}-wal`);
  await copyIfExists(`${dbPath}-journal`, `${target}-journal`);
  return target;
}

export function checkBank(path: string): { integrity: string; total: number; transfers: number } {
  const db = new Database(path);
  try {
    const integrity = db.pragma('integrity_check', { simple: true }) as string;
    const { total } = db.prepare('SELECT sum(balance) AS total FROM account').get() as { total: number };
    const { transfers } = db.prepare('SELECT count(*) AS transfers FROM transfer').get() as { transfers: number };
    return { integrity, total, transfers };
  } finally {
    db.close();
  }
}
