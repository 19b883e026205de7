// Consistent under load: four processes move money between rows of a SQLite database as fast
// as they can while at least 50 snapshot sets are taken with each available provider. Every
// snapshot must open, pass integrity_check and keep the sum; the application sees no errors.
import assert from 'node:assert/strict';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runSnapshotSet } from '../src/coordinator/index.ts';
import type { ProviderName } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { checkBank, createBank, startBankLoad, TOTAL } from '../src/cli/demo/bank.ts';
import { makeLoopFs } from './helpers/loop-fs.ts';
import { median } from './helpers/median.ts';

const SETS = 50;
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Where each provider is tested: a plain temp directory for copy, loop-device file systems for the rest. */
async function placeFor(provider: ProviderName): Promise<{ dir: string } | { skip: string }> {
  if (provider === 'copy') {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-load-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return { dir };
  }
  // Sparse: only what is written takes space. Four tight writers write the WAL at hundreds of MB a second.
  const fs = await makeLoopFs(provider === 'btrfs' ? 'btrfs' : 'xfs', 8192);
  if ('skip' in fs) return fs;
  cleanups.push(() => fs.cleanup());
  const dir = join(fs.mountPoint, 'bank');
  await mkdir(dir, { recursive: true });
  return { dir };
}

describe('SQLite under concurrent writers', () => {
  for (const name of ['copy', 'reflink', 'btrfs', 'fsfreeze'] as const) {
    test(`${SETS} sets with the ${name} provider are all transaction-consistent`, async (t) => {
      const place = await placeFor(name);
      if ('skip' in place) {
        t.skip(place.skip);
        return;
      }
      const provider = createProviders().find((p) => p.name === name)!;
      const support = await provider.supports(place.dir);
      if (!support.ok) {
        t.skip(`${name} cannot serve ${place.dir}: ${support.reason}`);
        return;
      }
      const work = await mkdtemp(join(tmpdir(), 'quiesce-load-state-'));
      cleanups.push(() => rm(work, { recursive: true, force: true }));
      const dbPath = join(place.dir, 'bank.db');
      createBank(dbPath);
      const load = await startBankLoad(dbPath, 4);
      const endpoint = createWriterRuntime(
        createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(work, 'writers') }),
      );
      const windows: number[] = [];
      const checks: string[] = [];
      try {
        for (let i = 0; i < SETS; i++) {
          const before = load.progress();
          const report = await runSnapshotSet({
            kind: 'snapshot',
            backupType: 'copy',
            writers: [{ name: 'bank', endpoint, policy: 'require' }],
            paths: [],
            stateDir: join(work, 'state'),
            stagingDir: join(work, 'staging'),
            resolveProvider: async () => ({ provider, level: support.level }),
            freezeTimeoutMs: 10_000,
            commitTimeoutMs: 10_000,
            use: async (view) => {
              const snap = view.resolve(dbPath);
              assert.ok(snap, 'the database is in the snapshot');
              const check = await checkBank(snap);
              checks.push(`${check.integrity}:${check.sum}`);
              assert.equal(check.integrity, 'ok', `set ${i}: integrity_check`);
              assert.equal(check.sum, TOTAL, `set ${i}: the sum of balances`);
              assert.equal(check.accounts, 100);
            },
          });
          assert.equal(report.status, 'succeeded', JSON.stringify(report.error ?? report.benign));
          assert.equal(report.consistency, 'application');
          windows.push(report.freezeWindowMs!);
          // The application keeps moving between sets.
          const waitUntil = Date.now() + 5_000;
          while (load.progress() <= before && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 5));
        }
      } finally {
        const stats = await load.stop();
        await endpoint.close();
        const errors = stats.reduce((n, s) => n + s.errors, 0);
        const transfers = stats.reduce((n, s) => n + s.transfers, 0);
        t.diagnostic(
          `${name}: ${transfers} transfers, ${errors} errors; freeze window median ${median(windows).toFixed(1)} ms, max ${Math.max(...windows).toFixed(1)} ms`,
        );
        assert.equal(errors, 0, `the application saw no errors (last: ${stats.find((s) => s.lastError)?.lastError})`);
        assert.ok(
          stats.every((s) => s.transfers > 0),
          'every worker made progress',
        );
      }
      assert.equal(checks.length, SETS);
      const final = await checkBank(dbPath);
      assert.equal(final.sum, TOTAL);
    });
  }
});
