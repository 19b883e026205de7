// A plain path read in place after thaw (no snapshot holds it) keeps changing while it is read:
// files are rewritten at other sizes, shrink, vanish and come back. A backup of it does not fail
// for that: each file is stored as it was read, a file that went is left out, the report counts
// them, the level is `inconsistent`, and the files that did not change restore bit-exact.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { restore, runBackup } from '../src/backup/index.ts';
import { Catalog } from '../src/catalog/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { initRepository } from '../src/repository/index.ts';
import { TEST_REPOSITORY_OPTIONS } from './helpers/repository.ts';

const BACKUPS = 5;
const STABLE_FILES = 40;
const CHURN_FILES = 120;
const copy = createProviders().find((p) => p.name === 'copy')!;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-live-read-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * A process that rewrites the churn files without pause: small ones at a new size each time,
 * every seventh removed and written again, and two large ones cut short and grown back.
 */
function startChurn(churn: string): ChildProcess {
  const script = `
    const { writeFileSync, rmSync, truncateSync, appendFileSync } = require('node:fs');
    const { join } = require('node:path');
    const dir = ${JSON.stringify(churn)};
    let round = 0;
    const step = () => {
      round++;
      for (let i = 0; i < ${CHURN_FILES}; i++) {
        const path = join(dir, 'small-' + i);
        if (i % 7 === round % 7) rmSync(path, { force: true });
        else writeFileSync(path, Buffer.alloc(1 + ((round * 131 + i * 17) % 4000), round % 256));
      }
      for (const name of ['large-0', 'large-1']) {
        const path = join(dir, name);
        truncateSync(path, (round * 65537) % (3 << 20));
        appendFileSync(path, Buffer.alloc(1 << 20, round % 256));
      }
      setImmediate(step);
    };
    step();
  `;
  return spawn(process.execPath, ['-e', script], { stdio: 'inherit' });
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

test('a plain path that changes while it is read in place is stored as read; the set does not fail', async (t) => {
  const source = join(dir, 'data');
  const stable = join(source, 'stable');
  const churn = join(source, 'churn');
  await mkdir(stable, { recursive: true });
  await mkdir(churn, { recursive: true });
  const hashes = new Map<string, string>();
  for (let i = 0; i < STABLE_FILES; i++) {
    const content = Buffer.alloc(i === 0 ? 3 << 20 : 100 + i * 37, `stable ${i};`);
    await writeFile(join(stable, `file-${i}`), content);
    hashes.set(`file-${i}`, createHash('sha256').update(content).digest('hex'));
  }
  for (const name of ['large-0', 'large-1']) await writeFile(join(churn, name), Buffer.alloc(2 << 20, 1));
  const repository = await initRepository(
    await FsBackend.create(join(dir, 'repo')),
    'live read',
    TEST_REPOSITORY_OPTIONS,
  );
  const churner = startChurn(churn);
  const reports = [];
  try {
    for (let i = 0; i < BACKUPS; i++) {
      const { report } = await runBackup({
        repository,
        catalogCache: null,
        backupType: 'full',
        writers: [],
        paths: [source],
        stateDir: join(dir, 'state'),
        stagingDir: join(dir, 'staging'),
        resolveProvider: async () => ({ provider: copy, level: 'crash' }),
      });
      assert.equal(report.status, 'succeeded', `backup ${i}: ${JSON.stringify(report.error)}`);
      assert.equal(report.consistency, 'inconsistent', 'read in place: no one point in time');
      assert.equal(report.snapshots.find((s) => s.original === source)?.provider, 'live');
      reports.push(report);
    }
  } finally {
    churner.kill('SIGKILL');
    await once(churner, 'exit');
  }
  const changed = reports.map((r) => r.stats.changedWhileRead ?? 0);
  t.diagnostic(`files that changed or went while read, per backup: ${changed.join(', ')}`);
  assert.ok(
    changed.some((n) => n > 0),
    `files changed under every read, yet no backup counted one (${changed.join(', ')})`,
  );

  const catalog = await Catalog.load(repository, null);
  for (const [i, report] of reports.entries()) {
    const target = join(dir, `restored-${i}`);
    const result = await restore({ repository, tree: catalog.find(report.id)!.tree, target });
    assert.deepEqual(result.failed, [], `restore ${i}`);
    for (const [name, hash] of hashes) assert.equal(await sha256(join(target, stable, name)), hash, `${name}`);
    // Every churn file restored is whole: its size is the content stored for it.
    for (const name of await readdir(join(target, churn))) {
      const content = await readFile(join(target, churn, name));
      assert.equal((await stat(join(target, churn, name))).size, content.length);
      // Read while rewritten: empty (between the truncate and the write) up to a whole version.
      if (name.startsWith('small-')) assert.ok(content.length <= 4000, `${name}: ${content.length} bytes`);
    }
  }
  const check = await repository.check({ readData: true });
  assert.deepEqual(check.problems, [], 'the repository checks clean');
  await repository.close();
});
