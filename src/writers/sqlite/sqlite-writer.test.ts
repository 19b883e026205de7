import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { QuiesceError, type BackupType, type ComponentPlan, type PostSnapshotResponse } from '../../model/index.ts';
import type { HandlerContext, WriterDefinition } from '../sdk/definition.ts';
import { historyPath } from './backup-history.ts';
import { decodeStamp } from './page-stamp.ts';
import { createSqliteWriter, snapshotPathOf } from './sqlite-writer.ts';

const betterSqlite3 = createRequire(import.meta.url).resolve('better-sqlite3');
const ACCOUNTS = 100;
const START_BALANCE = 1000;

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-sqlite-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let dirCount = 0;
async function freshDir(): Promise<string> {
  const dir = join(root, `d${dirCount++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

function ctx(setId: string, signal: AbortSignal = new AbortController().signal): HandlerContext {
  return { setId, signal };
}

function createBank(path: string, journalMode: 'wal' | 'delete'): void {
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

async function withBankWorkers<T>(
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

const commits = (stats: Int32Array): number => stats.slice(1, 8).reduce((sum, n) => sum + n, 0);

async function copyIfExists(from: string, to: string): Promise<void> {
  try {
    await copyFile(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Copies the database and its -wal/-journal, as a provider would while the writer is frozen. */
async function snapshotFiles(dbPath: string, dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const target = join(dir, name);
  await copyFile(dbPath, target);
  await copyIfExists(`${dbPath}-wal`, `${target}-wal`);
  await copyIfExists(`${dbPath}-journal`, `${target}-journal`);
  return target;
}

function checkBank(path: string): { integrity: string; total: number; transfers: number } {
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

describe('sqlite writer: quiescing', () => {
  for (const [journalMode, rounds, pauseMs] of [
    ['wal', 30, 0],
    ['delete', 8, 1],
  ] as const) {
    it(`${journalMode} mode: every copy taken while frozen is transaction-consistent under 4 busy application threads`, async () => {
      const dir = await freshDir();
      const dbPath = join(dir, 'bank.db');
      createBank(dbPath, journalMode);
      const writer = createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(dir, 'state') });
      const copies: string[] = [];
      const { result, errors, stats } = await withBankWorkers(dbPath, 4, pauseMs, async (shared) => {
        const windows: number[] = [];
        for (let round = 0; round < rounds; round++) {
          const setId = `set-${round}`;
          await writer.prepareSnapshot!(ctx(setId));
          const frozenAt = performance.now();
          await writer.freeze(ctx(setId, AbortSignal.timeout(10_000)));
          try {
            copies.push(await snapshotFiles(dbPath, join(dir, `copy-${round}`), 'bank.db'));
          } finally {
            await writer.thaw(ctx(setId));
          }
          windows.push(performance.now() - frozenAt);
          await sleep(5);
        }
        const afterLastThaw = commits(shared);
        await sleep(100);
        return { progressAfterThaw: commits(shared) - afterLastThaw, windows };
      });
      await writer.close!();

      assert.deepEqual(errors, [], 'the application threads saw no errors');
      assert.ok(result.progressAfterThaw > 0, 'the application kept committing after the last thaw');
      assert.ok(commits(stats) > rounds, 'the application made progress between freezes');
      let previousTransfers = -1;
      for (const copy of copies) {
        const check = checkBank(copy);
        assert.equal(check.integrity, 'ok', `${copy} passes integrity_check`);
        assert.equal(check.total, ACCOUNTS * START_BALANCE, `${copy}: no money appeared or vanished`);
        assert.ok(check.transfers >= previousTransfers, 'copies go forward in time');
        previousTransfers = check.transfers;
      }
      const live = checkBank(dbPath);
      assert.equal(live.total, ACCOUNTS * START_BALANCE);
    });
  }

  it('holds application writes while frozen; they complete after thaw', async () => {
    const dir = await freshDir();
    const dbPath = join(dir, 'bank.db');
    createBank(dbPath, 'wal');
    const writer = createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(dir, 'state') });
    await writer.freeze(ctx('s1'));
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       const db = new (require(workerData.module))(workerData.path, { timeout: 10000 });
       parentPort.postMessage('started');
       try { db.prepare('INSERT INTO transfer (at) VALUES (1)').run(); parentPort.postMessage('done'); }
       catch (error) { parentPort.postMessage('error: ' + error.message); }
       db.close();`,
      { eval: true, workerData: { module: betterSqlite3, path: dbPath } },
    );
    const messages: string[] = [];
    const done = new Promise<void>((resolve) => {
      worker.on('message', (message: string) => {
        messages.push(message);
        if (message !== 'started') resolve();
      });
    });
    while (!messages.includes('started')) await sleep(5);
    await sleep(300);
    assert.deepEqual(messages, ['started'], 'the write waits while the writer is frozen');
    const thawedAt = performance.now();
    await writer.thaw(ctx('s1'));
    await done;
    assert.deepEqual(messages, ['started', 'done'], 'the write completes after thaw, without an error');
    assert.ok(performance.now() - thawedAt < 2000);
    await new Promise((resolve) => worker.once('exit', resolve));
    assert.equal(checkBank(dbPath).transfers, 1);
    await writer.close!();
  });

  it('gives up on the lock when the signal aborts, without blocking the event loop', async () => {
    const dir = await freshDir();
    const dbPath = join(dir, 'bank.db');
    createBank(dbPath, 'wal');
    const holder = new Database(dbPath);
    holder.exec('BEGIN IMMEDIATE');
    const writer = createSqliteWriter({
      name: 'bank',
      path: dbPath,
      stateDir: join(dir, 'state'),
      lockTimeoutMs: 60_000,
    });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      const started = performance.now();
      await assert.rejects(writer.freeze(ctx('s1', AbortSignal.timeout(300))), (error: unknown) => {
        assert.ok(error instanceof QuiesceError);
        assert.equal(error.code, 'timeout');
        assert.match(error.message, /write lock/);
        return true;
      });
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 290 && elapsed < 2000, `gave up after ${elapsed} ms`);
      assert.ok(ticks >= 15, `the event loop ran while waiting (${ticks} ticks)`);

      const controller = new AbortController();
      setTimeout(() => controller.abort(new QuiesceError('retryable', 'set aborted')), 50);
      await assert.rejects(writer.freeze(ctx('s2', controller.signal)), { code: 'retryable' });

      const impatient = createSqliteWriter({
        name: 'bank',
        path: dbPath,
        stateDir: join(dir, 'state'),
        lockTimeoutMs: 100,
      });
      await assert.rejects(impatient.freeze(ctx('s3')), (error: unknown) => {
        assert.ok(error instanceof QuiesceError);
        assert.equal(error.code, 'retryable');
        assert.match(error.message, /lockTimeoutMs/);
        return true;
      });
      await impatient.close!();
    } finally {
      clearInterval(ticker);
      holder.exec('ROLLBACK');
      holder.close();
    }
    await writer.freeze(ctx('s4'));
    await writer.thaw(ctx('s4'));
    await writer.thaw(ctx('s4')); // thaw of a thawed writer is harmless
    await writer.close!();
  });

  it('says what to do when the database does not exist', async () => {
    const dir = await freshDir();
    const writer = createSqliteWriter({ name: 'gone', path: join(dir, 'missing.db'), stateDir: join(dir, 'state') });
    await assert.rejects(writer.freeze(ctx('s1')), (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'nonretryable');
      assert.match(error.message, /missing\.db does not exist; check the writer's path in the config/);
      return true;
    });
    await writer.close!();
  });
});

describe('sqlite writer: metadata and snapshot paths', () => {
  it('describes one database component with its -wal and -journal', async () => {
    const writer = createSqliteWriter({ name: 'shop', path: '/srv/shop/../shop/shop.db', stateDir: '/tmp/unused' });
    const metadata = typeof writer.metadata === 'function' ? await writer.metadata() : writer.metadata;
    assert.equal(metadata.classId, 'quiesce.sqlite');
    assert.equal(metadata.instanceId, '/srv/shop/shop.db');
    assert.equal(metadata.usage, 'back-end');
    assert.deepEqual(metadata.backupTypes, ['full', 'copy', 'incremental', 'differential']);
    assert.equal(metadata.components.length, 1);
    const [component] = metadata.components;
    assert.equal(component!.name, 'shop.db');
    assert.equal(component!.logicalPath, 'shop');
    assert.equal(component!.kind, 'database');
    assert.deepEqual(
      component!.files.map((f) => [f.path, f.isLog]),
      [
        ['/srv/shop/shop.db', false],
        ['/srv/shop/shop.db-wal', false],
        ['/srv/shop/shop.db-journal', false],
      ],
    );
  });

  it('maps an original path to the snapshot through the nearest snapshotted ancestor', () => {
    const snapshots = [
      { original: '/srv', snapshot: '/snap/a' },
      { original: '/srv/shop', snapshot: '/snap/b' },
      { original: '/srv/shopping', snapshot: '/snap/c' },
    ];
    assert.equal(snapshotPathOf('/srv/shop/shop.db', snapshots), '/snap/b/shop.db');
    assert.equal(snapshotPathOf('/srv/other/x.db', snapshots), '/snap/a/other/x.db');
    assert.equal(snapshotPathOf('/srv/shop/shop.db', [{ original: '/srv/shop/shop.db', snapshot: '/s/x' }]), '/s/x');
    assert.equal(snapshotPathOf('/var/x.db', snapshots), undefined);
  });
});

/** One backup through the writer's phases; the "snapshot" is a copy of the files taken while frozen. */
async function backup(
  writer: WriterDefinition,
  options: {
    setId: string;
    dbPath: string;
    snapshotDir: string;
    type: BackupType;
    previousStamp?: string;
    component?: string;
    succeeded?: boolean;
  },
): Promise<{ plan: ComponentPlan | undefined; post: PostSnapshotResponse; copy: string }> {
  const context = ctx(options.setId);
  const component = options.component ?? 'bank/bank.db';
  const plans = (await writer.prepareBackup!(
    {
      setId: options.setId,
      backupType: options.type,
      components: [{ component, previousStamp: options.previousStamp }],
    },
    context,
  )) as ComponentPlan[];
  await writer.prepareSnapshot!(context);
  await writer.freeze(context);
  let copy: string;
  try {
    copy = await snapshotFiles(options.dbPath, options.snapshotDir, 'bank.db');
  } finally {
    await writer.thaw(context);
  }
  const dbDir = join(options.dbPath, '..');
  const post = (await writer.postSnapshot!(
    { setId: options.setId, snapshots: [{ original: dbDir, snapshot: options.snapshotDir }] },
    context,
  )) as PostSnapshotResponse;
  const [plan] = plans;
  await writer.backupComplete!(
    {
      setId: options.setId,
      backupType: options.type,
      components: plan
        ? [
            {
              component,
              actualType: plan.actualType,
              succeeded: options.succeeded ?? true,
              stamp: post.components[0]?.newStamp,
            },
          ]
        : [],
    },
    context,
  );
  await writer.shutdown!(context);
  return { plan, post, copy };
}

describe('sqlite writer: incremental backups through page stamps', () => {
  it('reports only the changed blocks, and the base patched with them equals the new snapshot', async () => {
    const dir = await freshDir();
    const dbPath = join(dir, 'bank.db');
    const app = new Database(dbPath);
    app.pragma('journal_mode = wal');
    app.exec('CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
    const insert = app.prepare('INSERT INTO blob (id, data) VALUES (?, ?)');
    app.transaction(() => {
      for (let id = 0; id < 20_000; id++) insert.run(id, randomBytes(1000));
    })();
    app.pragma('wal_checkpoint(TRUNCATE)');
    const writer = createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(dir, 'state') });

    const full = await backup(writer, { setId: 'full-1', dbPath, snapshotDir: join(dir, 'snap1'), type: 'full' });
    assert.equal(full.plan?.actualType, 'full');
    const fullResult = full.post.components[0]!;
    assert.equal(fullResult.partialFiles, undefined, 'a full backup reads whole files');
    const fullStamp = decodeStamp(fullResult.newStamp!);
    assert.ok(fullStamp.size > 19 * 1024 * 1024, `the database is large (${fullStamp.size} bytes)`);

    const update = app.prepare('UPDATE blob SET data = ? WHERE id = ?');
    for (let n = 0; n < 10; n++) update.run(randomBytes(1000), n * 1999);

    const inc = await backup(writer, {
      setId: 'inc-1',
      dbPath,
      snapshotDir: join(dir, 'snap2'),
      type: 'incremental',
      previousStamp: fullResult.newStamp,
    });
    assert.equal(inc.plan?.actualType, 'incremental');
    assert.equal(inc.plan?.typeReason, undefined);
    const incResult = inc.post.components[0]!;
    const [partial] = incResult.partialFiles ?? [];
    assert.ok(partial, 'an incremental lists partial files');
    assert.equal(partial.path, dbPath, 'partial files name the original path');
    const newDb = await readFile(inc.copy);
    assert.equal(partial.size, newDb.length);
    const changed = partial.ranges.reduce((sum, range) => sum + range.length, 0);
    assert.ok(changed > 0, 'some blocks changed');
    assert.ok(changed < newDb.length / 20, `only ${changed} of ${newDb.length} bytes are read`);
    for (let i = 1; i < partial.ranges.length; i++) {
      const previous = partial.ranges[i - 1]!;
      assert.ok(
        previous.offset + previous.length < partial.ranges[i]!.offset,
        'ranges are sorted and adjacent ones merged',
      );
    }

    // Restore: the full's database file patched with the ranges, plus the new -wal read whole.
    const patched = Buffer.alloc(partial.size);
    (await readFile(full.copy)).copy(patched, 0, 0, Math.min(partial.size, fullStamp.size));
    for (const range of partial.ranges) newDb.copy(patched, range.offset, range.offset, range.offset + range.length);
    assert.ok(patched.equals(newDb), 'the patched base is byte for byte the new snapshot');
    const restoreDir = join(dir, 'restore');
    await mkdir(restoreDir);
    await writeFile(join(restoreDir, 'bank.db'), patched);
    await copyIfExists(`${inc.copy}-wal`, join(restoreDir, 'bank.db-wal'));
    const restored = new Database(join(restoreDir, 'bank.db'));
    assert.equal(restored.pragma('integrity_check', { simple: true }), 'ok');
    const live = app.prepare('SELECT data FROM blob WHERE id = ?');
    const back = restored.prepare('SELECT data FROM blob WHERE id = ?');
    for (let n = 0; n < 10; n++)
      assert.ok((back.get(n * 1999) as { data: Buffer }).data.equals((live.get(n * 1999) as { data: Buffer }).data));
    restored.close();

    app.close();
    await writer.close!();
  });
});

describe('sqlite writer: type negotiation and the chain guard', () => {
  async function setup(options: { honorFull?: boolean } = {}) {
    const dir = await freshDir();
    const dbPath = join(dir, 'bank.db');
    createBank(dbPath, 'wal');
    const stateDir = join(dir, 'state');
    const writer = createSqliteWriter({ name: 'bank', path: dbPath, stateDir, honorFull: options.honorFull });
    let n = 0;
    const run = (type: BackupType, previousStamp?: string, extra: { succeeded?: boolean; setId?: string } = {}) =>
      backup(writer, {
        setId: extra.setId ?? `set-${n}`,
        dbPath,
        snapshotDir: join(dir, `snap-${n++}`),
        type,
        previousStamp,
        succeeded: extra.succeeded,
      });
    const stamp = (result: { post: PostSnapshotResponse }) => result.post.components[0]!.newStamp!;
    const history = async () =>
      JSON.parse(await readFile(historyPath(stateDir, dbPath), 'utf8')) as Record<string, unknown>;
    return { dir, dbPath, stateDir, writer, run, stamp, history };
  }

  it('honorFull false takes a full as copy and leaves the history alone', async () => {
    const { writer, run, stateDir } = await setup({ honorFull: false });
    const { plan } = await run('full');
    assert.equal(plan?.actualType, 'copy');
    assert.equal(plan?.typeReason, 'policy');
    assert.match(plan?.typeMessage ?? '', /honorFull/);
    await assert.rejects(readdir(stateDir), { code: 'ENOENT' }, 'a copy writes no history');
    const promoted = await run('incremental');
    assert.equal(promoted.plan?.actualType, 'copy', 'a promoted full is a copy too under honorFull false');
    assert.equal(promoted.plan?.typeReason, 'no-base');
    await writer.close!();
  });

  it('takes an incremental or differential without a base as full (no-base)', async () => {
    const { writer, run, history, stamp } = await setup();
    for (const type of ['incremental', 'differential'] as const) {
      const { plan } = await run(type);
      assert.equal(plan?.actualType, 'full');
      assert.equal(plan?.typeReason, 'no-base');
    }
    const garbage = await run('differential', '{"not":"a stamp"}');
    assert.equal(garbage.plan?.actualType, 'full');
    assert.equal(garbage.plan?.typeReason, 'no-base');
    assert.equal((await history()).baseStampId, decodeStamp(stamp(garbage)).id, 'the promoted full became the base');
    await writer.close!();
  });

  it('promotes a differential to full when someone else moved the base (chain guard), naming who', async () => {
    const { writer, run, stamp } = await setup();
    const ours = await run('full', undefined, { setId: 'catalog-a-full' });
    const theirs = await run('full', undefined, { setId: 'catalog-b-full' });
    const diff = await run('differential', stamp(ours));
    assert.equal(diff.plan?.actualType, 'full');
    assert.equal(diff.plan?.typeReason, 'chain-guard');
    assert.match(diff.plan?.typeMessage ?? '', /catalog-b-full/, 'the message names the set that moved the base');
    assert.equal(diff.post.components[0]!.partialFiles, undefined);

    const onTheirs = await run('differential', stamp(theirs));
    assert.equal(onTheirs.plan?.actualType, 'full', 'the promoted full moved the base again');
    const latest = await run('differential', stamp(onTheirs));
    assert.equal(latest.plan?.actualType, 'differential');
    assert.ok(latest.post.components[0]!.partialFiles, 'an honoured differential lists partial files');
    await writer.close!();
  });

  it('copy and differential leave the chain as it was; incremental moves it; failures change nothing', async () => {
    const { writer, run, stamp, history } = await setup();
    const full = await run('full', undefined, { setId: 'full-1' });
    const before = await history();
    assert.equal(before.baseStampId, decodeStamp(stamp(full)).id);
    assert.equal(before.lastStampId, decodeStamp(stamp(full)).id);

    await run('copy');
    await run('differential', stamp(full));
    await run('full', undefined, { succeeded: false });
    assert.deepEqual(await history(), before, 'copy, differential and a failed full leave the history as it was');

    const diff = await run('differential', stamp(full));
    assert.equal(diff.plan?.actualType, 'differential');
    const inc = await run('incremental', stamp(full));
    assert.equal(inc.plan?.actualType, 'incremental');
    assert.equal((await history()).baseStampId, before.baseStampId);
    assert.equal((await history()).lastStampId, decodeStamp(stamp(inc)).id);

    const stale = await run('incremental', stamp(full));
    assert.equal(stale.plan?.actualType, 'full', 'an incremental on a stamp older than the last backup is promoted');
    assert.equal(stale.plan?.typeReason, 'chain-guard');
    await writer.close!();
  });

  it('refuses log backups, ignores sets that do not select it, and writes its history atomically', async () => {
    const { writer, run, stateDir } = await setup();
    await assert.rejects(
      writer.prepareBackup!(
        { setId: 'log-1', backupType: 'log', components: [{ component: 'bank/bank.db' }] },
        ctx('log-1'),
      ),
      (error: unknown) => {
        assert.ok(error instanceof QuiesceError);
        assert.equal(error.code, 'nonretryable');
        assert.match(error.message, /no log backups.*incremental/);
        return true;
      },
    );
    const unselected = await backup(writer, {
      setId: 'unselected',
      dbPath: join(stateDir, '..', 'bank.db'),
      snapshotDir: join(stateDir, '..', 'snap-x'),
      type: 'full',
      component: 'someone/else.db',
    });
    assert.equal(unselected.plan, undefined);
    assert.deepEqual(unselected.post.components, [], 'no stamp for a component that was not selected');

    const byName = await run('full');
    assert.ok(byName.plan, 'selected by its full name');
    assert.deepEqual(
      await readdir(stateDir),
      [historyPath(stateDir, join(stateDir, '..', 'bank.db')).slice(stateDir.length + 1)],
      'no temporary files left',
    );
    await writer.close!();
  });
});
