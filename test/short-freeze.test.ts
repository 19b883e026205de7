// The freeze holds only what a frozen writer owns. On ext4, XFS and btrfs (loop devices), 1 GiB
// of plain files lies around a SQLite bank that four processes keep writing; 20 sets are taken
// with the providers quiesce chooses. The freeze window stays short (it once copied the whole
// gigabyte), every snapshot of the bank is consistent, and the plain path gets only the level
// its snapshot has: `crash` from btrfs's atomic snapshot, `inconsistent` where it is read in place.
// ext4 is taken with the copy provider, XFS with reflink, btrfs with its subvolume snapshot.
// On ext4 a real backup is restored and its plain files are the files as read.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { checkBank, createBank, startBankLoad, TOTAL, type BankLoad } from '../src/cli/demo/bank.ts';
import { runSnapshotSet } from '../src/coordinator/index.ts';
import type { SetReport } from '../src/model/index.ts';
import { chooseProvider, createProviders } from '../src/providers/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { runQuiesce } from './helpers/cli.ts';
import { makeLoopFs, type LoopFsKind } from './helpers/loop-fs.ts';
import { median } from './helpers/median.ts';

const execFileAsync = promisify(execFile);
const SETS = 20;
const FILES = 16;
const FILE_MIB = 64;
const EXPECTED_PLAIN: Record<LoopFsKind, string> = { ext4: 'inconsistent', xfs: 'inconsistent', btrfs: 'crash' };
/**
 * The median freeze window each file system must stay under. The copy provider on ext4 copies
 * the bank's -wal inside the freeze; four tight writers starve SQLite's own checkpoints until
 * it holds hundreds of MB (55 to 926 MB measured here, 135 ms median), so the SQLite writer cuts
 * it in prepare-snapshot: 40 to 70 ms median now, against 6.5 s when the plain gigabyte was
 * copied too. XFS and btrfs measure 20 to 60 ms. Beside the rest of the suite on two cores a
 * median reached 150 ms: the bounds catch the gigabyte coming back into the freeze (seconds),
 * and `npm run bench` measures the window.
 */
const MEDIAN_BOUND_MS: Record<LoopFsKind, number> = { ext4: 400, xfs: 400, btrfs: 400 };

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** 1 GiB of plain files, each 1 MiB blocks that differ by file and block; their hashes by name. */
async function writePlainFiles(dir: string): Promise<Map<string, string>> {
  await mkdir(dir, { recursive: true });
  const hashes = new Map<string, string>();
  for (let f = 0; f < FILES; f++) {
    const blocks = Array.from({ length: FILE_MIB }, (_, b) => Buffer.alloc(1 << 20, `file ${f} block ${b};`));
    const content = Buffer.concat(blocks);
    await writeFile(join(dir, `plain-${f}.bin`), content);
    hashes.set(`plain-${f}.bin`, createHash('sha256').update(content).digest('hex'));
  }
  return hashes;
}

describe('short, honest freezes with 1 GiB of plain files beside a SQLite writer', () => {
  for (const kind of ['ext4', 'xfs', 'btrfs'] as const) {
    test(`${kind}: the freeze window does not grow with the plain files`, async (t) => {
      const fs = await makeLoopFs(kind, 6144);
      if ('skip' in fs) {
        t.skip(fs.skip);
        return;
      }
      cleanups.push(() => fs.cleanup());
      // Off the loop file system: fsfreeze (ext4's provider as root) must not freeze its own copies.
      const staging = await mkdtemp(join(tmpdir(), 'quiesce-short-freeze-'));
      cleanups.push(() => rm(staging, { recursive: true, force: true }));
      const data = join(fs.workDir, 'data');
      const hashes = await writePlainFiles(data);
      // Written before the sets, not during them: a btrfs snapshot or a freeze must not flush them.
      await execFileAsync('sync', ['-f', data]);
      const dbPath = join(data, 'bank.db');
      createBank(dbPath);
      const load = await startBankLoad(dbPath, 4);
      const endpoint = createWriterRuntime(
        createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(fs.mountPoint, 'writer-state') }),
      );
      const providers = createProviders();
      const windows: number[] = [];
      try {
        for (let i = 0; i < SETS; i++) {
          const report = await runSnapshotSet({
            kind: 'snapshot',
            backupType: 'full',
            writers: [{ name: 'bank', endpoint, policy: 'require' }],
            paths: [data],
            stateDir: join(fs.mountPoint, 'state'),
            stagingDir: join(staging, 'staging'),
            resolveProvider: async (path) => {
              // ext4 has no snapshot of its own: the copy provider, as a user without root gets
              // (as root, fsfreeze would flush the bank's writes inside the freeze: see the bench).
              const choice = await chooseProvider(path, providers, kind === 'ext4' ? { force: 'copy' } : {});
              return { provider: choice.provider, level: choice.support.level };
            },
            use: async (view) => {
              const check = await checkBank(view.resolve(dbPath)!);
              assert.equal(check.integrity, 'ok', `set ${i}: integrity_check`);
              assert.equal(check.sum, TOTAL, `set ${i}: the sum of balances`);
            },
          });
          assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
          windows.push(report.freezeWindowMs!);
          assertLevels(report, kind, data);
        }
      } finally {
        await stopLoad(load, t);
        await endpoint.close();
      }
      const window = median(windows);
      t.diagnostic(`${kind}: freeze window median ${window.toFixed(1)} ms, max ${Math.max(...windows).toFixed(1)} ms`);
      assert.ok(window < MEDIAN_BOUND_MS[kind], `median freeze window ${window.toFixed(1)} ms over ${SETS} sets`);
      if (kind === 'ext4') await backupAndRestore(fs.mountPoint, staging, data, dbPath, hashes);
    });
  }
});

function assertLevels(report: SetReport, kind: LoopFsKind, data: string): void {
  const plain = report.snapshots.find((s) => s.original === data);
  assert.equal(plain?.consistency, EXPECTED_PLAIN[kind], `${kind}: the plain path's level`);
  if (kind !== 'btrfs') assert.equal(plain?.provider, 'live', 'read in place after thaw');
  assert.equal(report.components.find((c) => c.writer === 'bank')?.consistency, 'application');
  assert.equal(report.consistency, EXPECTED_PLAIN[kind], 'the set carries its lowest part');
}

async function stopLoad(load: BankLoad, t: { diagnostic(message: string): void }): Promise<void> {
  const stats = await load.stop();
  const errors = stats.reduce((n, s) => n + s.errors, 0);
  t.diagnostic(`${stats.reduce((n, s) => n + s.transfers, 0)} transfers, ${errors} errors`);
  assert.equal(errors, 0, 'the application saw no errors');
}

/** One real backup through the command line, restored: the plain files are the files as read, the bank consistent. */
async function backupAndRestore(
  root: string,
  staging: string,
  data: string,
  dbPath: string,
  hashes: Map<string, string>,
) {
  const config = join(root, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(root, 'repo')}`,
      `stateDir: ${join(root, 'cli-state')}`,
      `stagingDir: ${join(staging, 'cli-staging')}`,
      `registrationDir: ${join(root, 'none')}`,
      'writers:',
      `  - { type: sqlite, name: bank, path: ${dbPath} }`,
      `paths: [${data}]`,
      `providers: { ${data}: copy, ${dbPath}: copy }`,
    ].join('\n'),
  );
  const env = { QUIESCE_PASSWORD: 'short freezes' };
  assert.equal(runQuiesce(['init', '--config', config], env).code, 0);
  const backup = runQuiesce(['backup', '--config', config, '--type', 'full', '--json'], env);
  assert.equal(backup.code, 0, backup.stderr);
  const report = JSON.parse(backup.stdout) as SetReport;
  assert.equal(report.consistency, 'inconsistent');
  const target = join(root, 'restored');
  const restore = runQuiesce(['restore', 'latest', '--config', config, '--target', target], env);
  assert.equal(restore.code, 0, restore.stderr);
  const restored = join(target, data);
  for (const [name, hash] of hashes) {
    const content = await readFile(join(restored, name));
    assert.equal(createHash('sha256').update(content).digest('hex'), hash, `${name} restored as read`);
  }
  const names = (await readdir(restored)).filter((name) => name.startsWith('plain-'));
  assert.equal(names.length, hashes.size);
  const check = await checkBank(join(restored, 'bank.db'));
  assert.equal(check.integrity, 'ok');
  assert.equal(check.sum, TOTAL);
}
