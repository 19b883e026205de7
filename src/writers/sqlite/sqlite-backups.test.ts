// The SQLite writer's backups: incremental and differential through page stamps, and which type it
// takes for a requested one (type negotiation and the chain guard).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { QuiesceError, type BackupType, type ComponentPlan, type PostSnapshotResponse } from '../../model/index.ts';
import type { WriterDefinition } from '../sdk/definition.ts';
import { historyPath } from './backup-history.ts';
import { decodeStamp } from './page-stamp.ts';
import { createSqliteWriter } from './sqlite-writer.ts';
import { copyIfExists, createBank, ctx, scratchDirs, snapshotFiles } from './test-bank.ts';

const freshDir = scratchDirs();

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
