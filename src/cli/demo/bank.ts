// A bank: accounts whose balances only move between each other, so their sum never changes.
// Worker processes transfer money as fast as they can; a snapshot is consistent when it opens,
// passes integrity_check and keeps the sum. The demo runs it, and so do the tests and benchmarks.
import Database from 'better-sqlite3';
import { fork, type ChildProcess } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../package-root.ts';

export const ACCOUNTS = 100;
export const OPENING_BALANCE = 1000;
export const TOTAL = ACCOUNTS * OPENING_BALANCE;

export function createBank(path: string, options: { journal?: 'wal' | 'delete'; padding?: number } = {}): void {
  const db = new Database(path);
  db.pragma(`journal_mode = ${options.journal ?? 'wal'}`);
  db.exec('CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, note BLOB)');
  const insert = db.prepare('INSERT INTO accounts (id, balance, note) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < ACCOUNTS; i++) insert.run(i, OPENING_BALANCE, Buffer.alloc(options.padding ?? 64, i));
  })();
  db.close();
}

export interface BankCheck {
  integrity: string;
  sum: number;
  accounts: number;
}

/** Opens a database (copied first, with its -wal, so a read-only snapshot is never touched) and checks it. */
export async function checkBank(path: string): Promise<BankCheck> {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-bankcheck-'));
  try {
    const copy = join(dir, 'bank.db');
    await copyFile(path, copy);
    if (existsSync(`${path}-wal`)) await copyFile(`${path}-wal`, `${copy}-wal`);
    if (existsSync(`${path}-journal`)) await copyFile(`${path}-journal`, `${copy}-journal`);
    const db = new Database(copy);
    try {
      const integrity = (db.pragma('integrity_check', { simple: true }) as string) ?? 'none';
      const sum = (db.prepare('SELECT sum(balance) AS s FROM accounts').get() as { s: number }).s;
      const accounts = (db.prepare('SELECT count(*) AS n FROM accounts').get() as { n: number }).n;
      return { integrity, sum, accounts };
    } finally {
      db.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface WorkerStats {
  transfers: number;
  errors: number;
  lastError: string | null;
  final?: boolean;
}

export interface BankLoad {
  workers: ChildProcess[];
  /** Stop the workers and collect what they saw. */
  stop(): Promise<WorkerStats[]>;
  /** Transfers committed so far, as the workers last reported. */
  progress(): number;
}

const workerScript = join(PACKAGE_ROOT, 'src', 'cli', 'demo', 'bank-worker.ts');

/**
 * Starts `count` processes that move money between accounts of `path` as fast as they can, or
 * (`pauseMs`) resting that long after every 20 ms of transfers.
 */
export async function startBankLoad(path: string, count = 4, options: { pauseMs?: number } = {}): Promise<BankLoad> {
  const reported = new Map<ChildProcess, WorkerStats>();
  const workers = Array.from({ length: count }, (_, i) => {
    const child = fork(workerScript, [path, String(i), String(options.pauseMs ?? 0)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    child.on('message', (message: WorkerStats) => reported.set(child, message));
    return child;
  });
  // Wait until every worker has committed at least once.
  const started = Date.now();
  while ([...reported.values()].filter((s) => s.transfers > 0).length < count) {
    if (Date.now() - started > 30_000) throw new Error('bank workers did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    workers,
    progress: () => [...reported.values()].reduce((n, s) => n + s.transfers, 0),
    async stop() {
      const finals = await Promise.all(
        workers.map(
          (child) =>
            new Promise<WorkerStats>((resolve) => {
              const onMessage = (message: WorkerStats) => {
                if (!message.final) return;
                child.off('message', onMessage);
                resolve(message);
              };
              child.on('message', onMessage);
              child.send('stop');
            }),
        ),
      );
      await Promise.all(
        workers.map((child) => new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))),
      );
      return finals;
    },
  };
}
