// Restoring a set by the CLI's route: the set found in the catalog, one component's files, and
// its writer's pre-restore before them and post-restore after, even when the restore fails.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { restoreSet, runBackup, type RestoreSetOptions, type RestoreWriter } from '../src/backup/index.ts';
import type { RestoreRequest, WriterEndpoint } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { initRepository, type Repository } from '../src/repository/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { TEST_REPOSITORY_OPTIONS } from './helpers/repository.ts';

const copy = createProviders().find((p) => p.name === 'copy')!;
let dir: string;
let repository: Repository;
let setId: string;
let dbPath: string;
let plainPath: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-restore-set-'));
  const source = join(dir, 'source');
  dbPath = join(source, 'shop.db');
  plainPath = join(dir, 'plain.txt');
  await mkdir(source, { recursive: true });
  const db = new Database(dbPath);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  db.prepare('INSERT INTO t (v) VALUES (?)').run('first');
  db.close();
  await writeFile(plainPath, 'not part of the component');
  repository = await initRepository(
    await FsBackend.create(join(dir, 'repo')),
    'correct horse battery staple',
    TEST_REPOSITORY_OPTIONS,
  );
  const endpoint = createWriterRuntime(createSqliteWriter({ name: 'shop', path: dbPath, stateDir: join(dir, 'w') }));
  const { report } = await runBackup({
    repository,
    catalogCache: null,
    backupType: 'full',
    writers: [{ name: 'shop', endpoint, policy: 'require' }],
    paths: [plainPath],
    stateDir: join(dir, 'state'),
    stagingDir: join(dir, 'staging'),
    resolveProvider: async () => ({ provider: copy, level: 'crash' }),
    commitTimeoutMs: 120_000,
    freezeTimeoutMs: 180_000,
  });
  assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
  setId = report.id;
});
after(async () => {
  await repository.close();
  await rm(dir, { recursive: true, force: true });
});

/** A writer that records its pre- and post-restore calls in `calls`. */
function recordingWriter(calls: string[]): RestoreWriter {
  const record = (what: string) => async (request: RestoreRequest) => {
    calls.push(`${what} ${request.setId} ${request.components.join(',')} ${request.target}`);
  };
  const endpoint = { preRestore: record('pre'), postRestore: record('post') } as unknown as WriterEndpoint;
  return { name: 'shop', endpoint };
}

const options = (extra: Partial<RestoreSetOptions>): RestoreSetOptions => ({
  repository,
  catalogCache: null,
  ref: 'latest',
  target: join(dir, 'target'),
  ...extra,
});

describe('restoreSet', () => {
  test("a component restores its files alone, between its writer's pre- and post-restore", async () => {
    const calls: string[] = [];
    const target = join(dir, 'component');
    const component = `shop/${basename(dbPath)}`; // the sqlite writer names it after the file
    const result = await restoreSet(options({ target, component, writers: [recordingWriter(calls)] }));
    assert.equal(result.setId, setId);
    assert.deepEqual(result.failed, []);
    assert.equal(result.files, 1);
    assert.deepEqual(await readFile(join(target, dbPath)), await readFile(dbPath));
    await assert.rejects(readFile(join(target, plainPath)), { code: 'ENOENT' });
    assert.deepEqual(calls, [`pre ${setId} ${component} ${target}`, `post ${setId} ${component} ${target}`]);
  });

  test('post-restore runs when the restore fails, and the restore error is the one thrown', async () => {
    const calls: string[] = [];
    const target = join(dir, 'a-file');
    await writeFile(target, 'in the way');
    await assert.rejects(
      restoreSet(options({ target, component: 'shop/shop.db', writers: [recordingWriter(calls)] })),
      // The restore's own error (a file where the target should be), not the post-restore's.
      { code: 'bad-usage', message: /restore target .*a-file is not a directory/ },
    );
    assert.deepEqual(
      calls.map((c) => c.split(' ')[0]),
      ['pre', 'post'],
    );
  });

  test('paths restore without any writer; an unknown set or component is a usage error', async () => {
    const target = join(dir, 'paths');
    const result = await restoreSet(options({ target, paths: [plainPath.slice(1)] }));
    assert.equal(result.files, 1);
    assert.equal(await readFile(join(target, plainPath), 'utf8'), 'not part of the component');
    await assert.rejects(restoreSet(options({ ref: 'nothing-like-it' })), /no backup set nothing-like-it/);
    const calls: string[] = [];
    await assert.rejects(
      restoreSet(options({ component: 'nope', writers: [recordingWriter(calls)] })),
      /has no component nope \(it has: shop\/shop\.db\)/,
    );
    assert.deepEqual(calls, []);
  });

  test('an interrupted restore stops', async () => {
    const interrupt = new AbortController();
    interrupt.abort(new Error('interrupted by SIGINT'));
    await assert.rejects(restoreSet(options({ signal: interrupt.signal })), /interrupted by SIGINT/);
  });
});
