// A level is what the snapshot really has: a plain directory copied file by file while nothing
// froze its writers is `inconsistent`, a SQLite database held still by its writer is
// `application`, and the set carries the lowest of them. The report's times are named for
// what they are: the whole set, the freeze window, the commit and the archive.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import type { SetReport } from '../src/model/index.ts';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

let dir: string;
let config: string;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: 'levels and times' });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-levels-'));
  const files = join(dir, 'files');
  await mkdir(files);
  for (let i = 0; i < 20; i++) await writeFile(join(files, `f${i}.txt`), `file ${i}\n`.repeat(100));
  const db = new Database(join(dir, 'shop.db'));
  db.pragma('journal_mode = WAL');
  db.exec('create table acct (id integer primary key, bal integer); insert into acct (bal) values (100), (200);');
  db.close();
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      'writers:',
      `  - { type: sqlite, name: shop, path: ${join(dir, 'shop.db')} }`,
      `paths: [${files}]`,
      `providers: { ${files}: copy, ${join(dir, 'shop.db')}: copy }`,
    ].join('\n'),
  );
  const init = quiesce('init', '--config', config);
  assert.equal(init.code, 0, init.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a plain directory copied file by file is inconsistent; the frozen database is application', () => {
  const run = quiesce('backup', '--config', config, '--type', 'full', '--json');
  assert.equal(run.code, 0, run.stderr);
  const report = JSON.parse(run.stdout) as SetReport;
  const files = join(dir, 'files');
  const plain = report.snapshots.find((s) => s.original === files);
  assert.equal(plain?.consistency, 'inconsistent', 'a copy of a live tree is not one point in time');
  const shop = report.components.find((c) => c.writer === 'shop');
  assert.equal(shop?.consistency, 'application');
  assert.equal(report.consistency, 'inconsistent', 'the set carries its lowest part');
  assert.equal(report.status, 'succeeded', 'a plain path without a writer is not a fallback');
});

test('the report names the set, the freeze window, the commit and the archive apart', () => {
  const run = quiesce('backup', '--config', config, '--type', 'full', '--json');
  assert.equal(run.code, 0, run.stderr);
  const report = JSON.parse(run.stdout) as SetReport;
  const { durationMs, archiveMs } = report.stats;
  assert.ok(archiveMs !== undefined && archiveMs > 0, `archive ${archiveMs} ms`);
  assert.ok(report.freezeWindowMs !== null && report.commitMs !== null);
  assert.ok(durationMs >= archiveMs, `the set (${durationMs} ms) holds its archive (${archiveMs} ms)`);
  assert.ok(durationMs >= report.freezeWindowMs, `the set (${durationMs} ms) holds its freeze window`);
  const elapsed = new Date(report.finishedAt).getTime() - new Date(report.startedAt).getTime();
  assert.ok(Math.abs(durationMs - elapsed) <= 1, `duration ${durationMs} ms is finishedAt - startedAt (${elapsed})`);
  const text = quiesce('backup', '--config', config, '--type', 'incremental');
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /set took [\d.]+ m?s: freeze window [\d.]+ m?s, commit [\d.]+ m?s, archive [\d.]+ m?s/);
});
