import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { QuiesceError } from '../../model/index.ts';
import { createSqliteWriter, snapshotPathOf } from './sqlite-writer.ts';
import {
  ACCOUNTS,
  START_BALANCE,
  betterSqlite3,
  checkBank,
  commits,
  createBank,
  ctx,
  scratchDirs,
  snapshotFiles,
  withBankWorkers,
} from './test-bank.ts';

const freshDir = scratchDirs();

describe('sqlite writer: quiescing under load', () => {
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
});

describe('sqlite writer: quiescing and the write lock', () => {
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
