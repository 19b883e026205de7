// Backups that last: round trip of generated trees, deduplication, partial reads of a changed
// SQLite database, the chain guard, and restore safety. Real files, a real repository on disk.
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { findNode, restore, runBackup, type BackupOptions } from '../src/backup/index.ts';
import { Catalog } from '../src/catalog/index.ts';
import type { SetWriter } from '../src/coordinator/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { initRepository, openRepository } from '../src/repository/index.ts';
import type { Repository } from '../src/repository/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { describeTree, diffTrees, generateTree } from './helpers/tree-gen.ts';
import { TEST_REPOSITORY_OPTIONS } from './helpers/repository.ts';

const PASSWORD = 'correct horse battery staple';
const copy = createProviders().find((p) => p.name === 'copy')!;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-backup-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function newRepository(name: string): Promise<Repository> {
  return initRepository(await FsBackend.create(join(dir, 'repos', name)), PASSWORD, TEST_REPOSITORY_OPTIONS);
}

function backupOptions(repository: Repository, name: string, extra: Partial<BackupOptions>): BackupOptions {
  return {
    repository,
    catalogCache: join(dir, `${name}-catalog.sqlite`),
    backupType: 'full',
    writers: [],
    paths: [],
    stateDir: join(dir, `${name}-state`),
    stagingDir: join(dir, `${name}-staging`),
    resolveProvider: async () => ({ provider: copy, level: 'crash' }),
    // The copy provider copies inside the freeze: a 1 GiB database needs more than the default 10 s on a slow disk.
    commitTimeoutMs: 120_000,
    freezeTimeoutMs: 180_000,
    ...extra,
  };
}

/** `length` pseudo-random bytes, the same for the same seed (AES-256-CTR's keystream). */
function seededBytes(length: number, seed: number): Buffer {
  const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

describe('backup and restore', () => {
  test('round trip: a generated tree restores bit-exact with its metadata', async () => {
    const source = join(dir, 'source');
    const generated = await generateTree(source, { largeMiB: 12 });
    const repository = await newRepository('roundtrip');
    try {
      const { report, manifestId } = await runBackup(backupOptions(repository, 'roundtrip', { paths: [source] }));
      assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
      assert.ok(manifestId);
      assert.ok(report.stats.files >= generated.files, `${report.stats.files} files stored`);
      const catalog = await Catalog.load(repository, null);
      const entry = catalog.find(report.id)!;
      const target = join(dir, 'restored');
      const result = await restore({ repository, tree: entry.tree, target });
      assert.deepEqual(result.failed, []);
      const problems = diffTrees(await describeTree(source), await describeTree(join(target, source)));
      assert.deepEqual(problems, []);
      // The sparse file comes back sparse.
      const sparse = await stat(join(target, source, 'sparse.img'));
      assert.equal(sparse.size, 64 << 20);
      assert.ok(sparse.blocks * 512 <= 1 << 20, `sparse.img takes ${sparse.blocks * 512} bytes on disk`);
    } finally {
      await repository.close();
    }
  });

  test('dedup: an unchanged re-backup adds under 1%; changing 1% adds about 1% plus chunk overhead', async (t) => {
    const source = join(dir, 'dedup');
    await mkdir(source, { recursive: true });
    const size = 64 << 20;
    // Random-looking data, the same every run (the cut points still differ from run to run: the
    // chunker is keyed by each new repository's secret).
    await writeFile(join(source, 'image.bin'), seededBytes(size, 1));
    const repository = await newRepository('dedup');
    try {
      const first = await runBackup(backupOptions(repository, 'dedup', { paths: [source] }));
      assert.ok(first.report.stats.bytesAdded > size * 0.9, `first backup added ${first.report.stats.bytesAdded}`);
      const again = await runBackup(backupOptions(repository, 'dedup', { paths: [source] }));
      assert.ok(
        again.report.stats.bytesAdded < size * 0.01,
        `unchanged re-backup added ${again.report.stats.bytesAdded} bytes`,
      );
      // Change 1%, in one place, in the middle of the file.
      const handle = await open(join(source, 'image.bin'), 'r+');
      const change = seededBytes(size / 100, 2);
      await handle.write(change, 0, change.length, size / 2);
      await handle.close();
      const changed = await runBackup(backupOptions(repository, 'dedup', { paths: [source] }));
      const added = changed.report.stats.bytesAdded;
      t.diagnostic(
        `a 1% change (${size / 100} bytes) added ${added} bytes; the unchanged re-backup ${again.report.stats.bytesAdded}`,
      );
      // The chunks the change overlaps are stored again (each up to the chunker's maximum size),
      // and a few after it: with normalized chunking the cut points after a change fall back in
      // line with the old ones only where an old cut point passes the mask the new chunk's
      // length calls for, which can take several chunks. Measured: 3.7 and 7.0 MB over most
      // runs, 15.1 MB once (14.4 MB over 1%); re-storing the file would add 64 MiB.
      const overhead = 4 * (4 << 20);
      assert.ok(added >= size / 100, `a 1% change added ${added} bytes`);
      assert.ok(added < size / 100 + overhead, `a 1% change added ${added} bytes (1% is ${size / 100})`);
    } finally {
      await repository.close();
    }
  });

  test('an unchanged incremental after a full records the very same tree: left-out entries keep the times their copies would have', async () => {
    const source = join(dir, 'same-times');
    await mkdir(join(source, 'sub'), { recursive: true });
    for (let i = 0; i < 10; i++) {
      const file = join(source, i % 2 ? 'sub' : '', `f${i}`);
      await writeFile(file, `${i}`);
      // An mtime with nanoseconds, which the full's copies keep only to the microsecond.
      await utimes(file, 1_700_000_000.123456, 1_700_000_000 + i + 0.987654321);
    }
    const repository = await newRepository('same-times');
    const options = (type: 'full' | 'incremental') =>
      backupOptions(repository, 'same-times', {
        paths: [source],
        backupType: type,
        resolveProvider: async () => ({ provider: copy, level: 'crash' }),
      });
    try {
      const full = await runBackup(options('full'));
      const incremental = await runBackup(options('incremental'));
      assert.equal(incremental.report.stats.bytesRead, 0, 'nothing read again');
      const catalog = await Catalog.load(repository, null);
      const [a, b] = await Promise.all(
        [full, incremental].map(({ report }) => findNode(repository, catalog.find(report.id)!.tree, source)),
      );
      assert.ok(a?.type === 'dir' && b?.type === 'dir');
      assert.equal(b.subtree, a.subtree, 'the same tree, to the nanosecond of every mtime');
    } finally {
      await repository.close();
    }
  });

  test('an incremental copies into its snapshot only the files that changed, and restores the tree as it is now', async () => {
    const source = join(dir, 'known');
    await mkdir(join(source, 'sub'), { recursive: true });
    const hourAgo = new Date(Date.now() - 3600_000);
    for (let i = 0; i < 40; i++) {
      const file = join(source, i % 2 ? 'sub' : '', `f${i}.bin`);
      await writeFile(file, randomBytes(4096));
      await utimes(file, hourAgo, hourAgo);
    }
    // Written just before the parent set: the parent may have read it between two writes within
    // one timestamp tick, so the next set reads it again even though size and mtime still match.
    await writeFile(join(source, 'racy.bin'), randomBytes(4096));
    const racyStats = await stat(join(source, 'racy.bin'));
    // A database under the same plain path, with its writer: always captured by the snapshot
    // (its writer reads it there), even when it looks unchanged.
    const dbPath = join(source, 'shop.db');
    const db = new Database(dbPath);
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    db.prepare('INSERT INTO t (v) VALUES (?)').run('first');
    db.close();
    await utimes(dbPath, hourAgo, hourAgo);
    const endpoint = createWriterRuntime(
      createSqliteWriter({ name: 'shop', path: dbPath, stateDir: join(dir, 'known-writer') }),
    );
    const writers: SetWriter[] = [{ name: 'shop', endpoint, policy: 'require' }];
    // The copy provider, and a record of what each of its snapshots left out.
    const leftOut: string[][] = [];
    const recording = {
      ...copy,
      name: copy.name,
      supports: copy.supports.bind(copy),
      prepare: copy.prepare.bind(copy),
      release: copy.release.bind(copy),
      async commit(...args: Parameters<typeof copy.commit>) {
        const snapshot = await copy.commit(...args);
        leftOut.push((snapshot.unchanged ?? []).map((f) => join(f.snapshotDir, f.name) + (f.directory ? '/' : '')));
        return snapshot;
      },
    };
    const repository = await newRepository('known');
    const options = (type: 'full' | 'incremental') =>
      backupOptions(repository, 'known', {
        paths: [source],
        writers,
        backupType: type,
        // Copied inside the freeze (`policy.plainPaths: in-freeze`): what the copy leaves out is under test.
        plainPaths: 'freeze',
        resolveProvider: async () => ({ provider: recording, level: 'crash' }),
      });
    try {
      const full = await runBackup(options('full'));
      assert.equal(full.report.status, 'succeeded', JSON.stringify(full.report.error));
      assert.deepEqual(leftOut[0], [], 'a full backup copies everything');

      await writeFile(join(source, 'f4.bin'), randomBytes(4096)); // changed, new mtime
      await writeFile(join(source, 'new.bin'), randomBytes(100));
      await rm(join(source, 'sub', 'f5.bin'));
      await writeFile(join(source, 'racy.bin'), randomBytes(4096));
      await utimes(join(source, 'racy.bin'), racyStats.atime, racyStats.mtime);

      const incremental = await runBackup(options('incremental'));
      assert.equal(incremental.report.status, 'succeeded', JSON.stringify(incremental.report.error));
      const notCopied = leftOut[1]!.map((path) => path.slice(path.lastIndexOf(source)));
      // 40 old files, less the changed and the removed one; never the racy file or the database.
      assert.equal(notCopied.filter((path) => !path.endsWith('/')).length, 38, notCopied.join('\n'));
      // `sub` holds nothing but unchanged files now: it is left out whole, not even made.
      assert.deepEqual(
        notCopied.filter((path) => path.endsWith('/')),
        [`${join(source, 'sub')}/`],
      );
      for (const name of ['f4.bin', 'racy.bin', 'shop.db', 'new.bin'])
        assert.ok(!notCopied.includes(join(source, name)), `${name} was left out`);
      // What was read: the changed, new and racy files and the database, not the 38 others.
      assert.ok(
        incremental.report.stats.bytesRead < 3 * 4096 + 100 + (await stat(dbPath)).size + 4096,
        `read ${incremental.report.stats.bytesRead} bytes`,
      );

      const catalog = await Catalog.load(repository, null);
      const target = join(dir, 'known-restored');
      const result = await restore({ repository, tree: catalog.find(incremental.report.id)!.tree, target });
      assert.deepEqual(result.failed, []);
      assert.deepEqual(diffTrees(await describeTree(source), await describeTree(join(target, source))), []);
      // Files restored in parallel all count (none of these has a hole).
      const sizes = await Promise.all(
        (await readdir(source, { recursive: true })).map(async (name) => stat(join(source, name))),
      );
      assert.equal(
        result.bytesWritten,
        sizes.filter((s) => s.isFile()).reduce((sum, s) => sum + s.size, 0),
      );
      const restored = new Database(join(target, dbPath), { readonly: true });
      assert.deepEqual(restored.prepare('SELECT v FROM t ORDER BY id').pluck().all(), ['first']);
      restored.close();

      // A mode changed without a write (the mtime stays): `sub` is still left out whole, and the
      // new mode is what the next set holds.
      await chmod(join(source, 'sub', 'f7.bin'), 0o600);
      const chmodded = await runBackup(options('incremental'));
      assert.ok(leftOut[2]!.some((path) => path.endsWith('/sub/')));
      const again = await Catalog.load(repository, null);
      const chmodTarget = join(dir, 'known-chmod');
      await restore({ repository, tree: again.find(chmodded.report.id)!.tree, target: chmodTarget });
      assert.equal((await stat(join(chmodTarget, source, 'sub', 'f7.bin'))).mode & 0o777, 0o600);
      assert.deepEqual(diffTrees(await describeTree(source), await describeTree(join(chmodTarget, source))), []);
      // Nothing changed since: the next set's tree is the same tree, every directory the parent's own.
      const unchanged = await runBackup(options('incremental'));
      const latest = await Catalog.load(repository, null);
      const sourceNode = async (setId: string) => findNode(repository, latest.find(setId)!.tree, source);
      const [now, before] = [await sourceNode(unchanged.report.id), await sourceNode(chmodded.report.id)];
      assert.ok(now?.type === 'dir' && before?.type === 'dir' && now.subtree === before.subtree, 'the same subtree');
    } finally {
      await endpoint.close();
      await repository.close();
    }
  });

  test('an incremental of a 1 GiB SQLite database with 100 pages changed reads only what changed and restores bit-exact', async (t) => {
    const dbPath = join(dir, 'big', 'app.db');
    await mkdir(join(dir, 'big'), { recursive: true });
    const db = new Database(dbPath);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
    const insert = db.prepare('INSERT INTO blobs (id, data) VALUES (?, randomblob(?))');
    const rows = Number(process.env.QUIESCE_TEST_DB_MIB ?? 1024);
    db.transaction(() => {
      for (let i = 0; i < rows; i++) insert.run(i, 1 << 20);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
    const endpoint = createWriterRuntime(
      createSqliteWriter({ name: 'app', path: dbPath, stateDir: join(dir, 'big-writer') }),
    );
    const writers: SetWriter[] = [{ name: 'app', endpoint, policy: 'require' }];
    const repository = await newRepository('big');
    try {
      const full = await runBackup(backupOptions(repository, 'big', { writers, backupType: 'full' }));
      assert.equal(full.report.status, 'succeeded', JSON.stringify(full.report.error));
      const fileSize = (await stat(dbPath)).size;
      // Change 100 pages: 100 small updates spread over the database.
      const update = db.prepare('UPDATE blobs SET data = randomblob(100) || substr(data, 101) WHERE id = ?');
      db.transaction(() => {
        for (let i = 0; i < 100; i++) update.run(Math.floor((i * rows) / 100));
      })();
      db.pragma('wal_checkpoint(TRUNCATE)');
      const incremental = await runBackup(backupOptions(repository, 'big', { writers, backupType: 'incremental' }));
      assert.equal(incremental.report.status, 'succeeded', JSON.stringify(incremental.report.error));
      const component = incremental.report.components[0]!;
      assert.equal(component.actualType, 'incremental');
      const read = incremental.report.stats.bytesRead;
      assert.ok(read < fileSize / 2, `the incremental read ${read} bytes of a ${fileSize}-byte database`);
      t.diagnostic(
        `incremental of a ${fileSize}-byte database with 100 changed pages: read ${read} bytes, added ${incremental.report.stats.bytesAdded}; the full read ${full.report.stats.bytesRead}`,
      );
      const expected = await sha256(dbPath);
      const catalog = await Catalog.load(repository, null);
      const entry = catalog.find(incremental.report.id)!;
      assert.equal(entry.meta.components[0]!.basedOn, full.report.id);
      const target = join(dir, 'big-restored');
      await restore({ repository, tree: entry.tree, target });
      assert.equal(await sha256(join(target, dbPath)), expected, 'the restored database is bit-exact');
      const restored = new Database(join(target, dbPath), { readonly: true });
      assert.equal(restored.pragma('integrity_check', { simple: true }), 'ok');
      restored.close();
    } finally {
      db.close();
      await endpoint.close();
      await repository.close();
    }
  });

  test('chain guard: a full by another requester promotes the differential to full; a copy changes nothing', async () => {
    const dbPath = join(dir, 'chain', 'shop.db');
    await mkdir(join(dir, 'chain'), { recursive: true });
    const db = new Database(dbPath);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (x)');
    db.prepare('INSERT INTO t VALUES (?)').run('one');
    const writerState = join(dir, 'chain-writer');
    const endpoint = createWriterRuntime(createSqliteWriter({ name: 'shop', path: dbPath, stateDir: writerState }));
    const writers: SetWriter[] = [{ name: 'shop', endpoint, policy: 'require' }];
    const ours = await newRepository('chain-ours');
    const theirs = await newRepository('chain-theirs');
    try {
      const full = await runBackup(backupOptions(ours, 'chain-ours', { writers, backupType: 'full' }));
      assert.equal(full.report.components[0]!.actualType, 'full');
      // Another requester's copy: the chain stays as it was.
      await runBackup(backupOptions(theirs, 'chain-theirs', { writers, backupType: 'copy' }));
      db.prepare('INSERT INTO t VALUES (?)').run('two');
      const diff = await runBackup(backupOptions(ours, 'chain-ours', { writers, backupType: 'differential' }));
      assert.equal(diff.report.components[0]!.actualType, 'differential');
      assert.equal(diff.report.components[0]!.typeReason, null);
      // Another requester's full moves the writer's differential base.
      await runBackup(backupOptions(theirs, 'chain-theirs', { writers, backupType: 'full' }));
      db.prepare('INSERT INTO t VALUES (?)').run('three');
      const promoted = await runBackup(backupOptions(ours, 'chain-ours', { writers, backupType: 'differential' }));
      const component = promoted.report.components[0]!;
      assert.equal(component.requestedType, 'differential');
      assert.equal(component.actualType, 'full');
      assert.equal(component.typeReason, 'chain-guard');
      assert.equal(promoted.report.status, 'succeeded');
    } finally {
      db.close();
      await endpoint.close();
      await ours.close();
      await theirs.close();
    }
  });

  test('restore of one path, and a hostile tree never writes outside the target', async () => {
    const source = join(dir, 'small');
    await mkdir(join(source, 'a'), { recursive: true });
    await writeFile(join(source, 'a', 'one.txt'), 'one');
    await writeFile(join(source, 'two.txt'), 'two');
    const repository = await newRepository('hostile');
    try {
      const { report } = await runBackup(backupOptions(repository, 'hostile', { paths: [source] }));
      const entry = (await Catalog.load(repository, null)).find(report.id)!;
      const partial = join(dir, 'partial');
      await restore({ repository, tree: entry.tree, target: partial, include: [join(source, 'a')] });
      assert.equal(await readFile(join(partial, source, 'a', 'one.txt'), 'utf8'), 'one');
      assert.equal(existsSync(join(partial, source, 'two.txt')), false);

      // A hostile tree, stored as a raw blob past the schema: restore refuses it and writes nothing outside.
      const hostile = [
        { name: '../../escaped', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', size: 0, content: [] },
        { name: '..', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', subtree: entry.tree },
      ];
      for (const node of hostile) {
        const saved = await repository.saveBlob('tree', Buffer.from(JSON.stringify({ nodes: [node] })));
        await repository.flush();
        const jail = join(dir, 'jail', node.name.length.toString());
        await assert.rejects(restore({ repository, tree: saved.id, target: jail }));
        assert.equal(existsSync(join(jail, '..', '..', 'escaped')), false);
        assert.equal(existsSync(join(dir, 'escaped')), false);
      }
      // A pre-existing symlink in the target is replaced, never followed.
      const trap = join(dir, 'trap');
      const outside = join(dir, 'outside');
      await mkdir(outside, { recursive: true });
      await mkdir(join(trap, source), { recursive: true });
      await symlink(outside, join(trap, source, 'a'));
      await restore({ repository, tree: entry.tree, target: trap });
      assert.equal(existsSync(join(outside, 'one.txt')), false, 'nothing was written through the symlink');
      assert.equal(await readFile(join(trap, source, 'a', 'one.txt'), 'utf8'), 'one');
    } finally {
      await repository.close();
    }
  });

  test('a repository reopened by another process sees every set', async () => {
    const repository = await openRepository(new FsBackend(join(dir, 'repos', 'roundtrip')), PASSWORD);
    try {
      const catalog = await Catalog.load(repository, null);
      assert.equal(catalog.all().length, 1);
    } finally {
      await repository.close();
    }
  });
});
