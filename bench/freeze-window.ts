// Freeze-window benchmark: median and p99 of the set's freeze window (first freeze to last thaw)
// for 1, 10 and 50 SQLite writers under write load, with each provider that can run here.
// Usage: npm run bench [-- --sets 30 --writers 1,10,50 --providers copy,reflink,btrfs,fsfreeze --plain 10]
// --plain: the writer counts measured again with 1 GiB of plain files in the set's paths.
// btrfs, reflink (XFS) and fsfreeze (XFS) need root and loop devices; they are skipped otherwise.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runSnapshotSet, type SetWriter } from '../src/coordinator/index.ts';
import type { ProviderName } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { createBank, startBankLoad } from '../src/cli/demo/bank.ts';
import { makeLoopFs } from '../test/helpers/loop-fs.ts';

const { values } = parseArgs({
  options: {
    sets: { type: 'string', default: '30' },
    writers: { type: 'string', default: '1,10,50' },
    providers: { type: 'string', default: 'copy,reflink,btrfs,fsfreeze' },
    // Writer counts measured again with 1 GiB of plain files beside them in the set's paths.
    plain: { type: 'string', default: '10' },
  },
});
const PLAIN_FILES = 16;
const PLAIN_FILE_MIB = 64;
const SETS = Number(values.sets);
const counts = values.writers.split(',').map(Number);
const withPlain = new Set(values.plain.split(',').filter(Boolean).map(Number));

/** 1 GiB of plain files under `dir`, written and synced once, before any set. */
async function writePlainFiles(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (let f = 0; f < PLAIN_FILES; f++)
    await writeFile(join(dir, `plain-${f}.bin`), Buffer.alloc(PLAIN_FILE_MIB << 20, `plain ${f};`));
  execFileSync('sync', ['-f', dir]);
  return dir;
}
const names = values.providers.split(',') as ProviderName[];

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

const header = ['provider', 'writers', 'median freeze ms', 'p99 freeze ms', 'median commit ms', 'note'];
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map(() => '---').join('|')}|`);
const rows = { push: (row: string[]) => console.log(`| ${row.join(' | ')} |`) };
for (const name of names) {
  let base: string;
  let cleanup = async () => {};
  if (name === 'copy') {
    base = await mkdtemp(join(tmpdir(), 'quiesce-bench-'));
    cleanup = () => rm(base, { recursive: true, force: true });
  } else {
    // Sparse; four tight writers write the WAL at hundreds of MB a second, and a full btrfs
    // ends in SIGBUS for whoever maps the -shm.
    const fs = await makeLoopFs(name === 'btrfs' ? 'btrfs' : 'xfs', 8192);
    if ('skip' in fs) {
      rows.push([name, '-', '-', '-', '-', `skipped: ${fs.skip}`]);
      continue;
    }
    base = fs.mountPoint;
    cleanup = () => fs.cleanup();
  }
  const provider = createProviders().find((p) => p.name === name)!;
  const work = await mkdtemp(join(tmpdir(), 'quiesce-bench-state-'));
  try {
    const runs = counts.flatMap((count) => [
      { count, plain: false },
      ...(withPlain.has(count) ? [{ count, plain: true }] : []),
    ]);
    for (const { count, plain } of runs) {
      const dir = join(base, `w${count}${plain ? '-plain' : ''}`);
      // Read in place after thaw, as a backup does: the freeze window is what is measured.
      const paths = plain ? [await writePlainFiles(join(dir, 'plain'))] : [];
      await mkdir(dir, { recursive: true });
      const writers: SetWriter[] = [];
      for (let i = 0; i < count; i++) {
        const path = join(dir, `db${i}.db`);
        createBank(path);
        writers.push({
          name: `db${i}`,
          policy: 'require',
          endpoint: createWriterRuntime(createSqliteWriter({ name: `db${i}`, path, stateDir: join(work, 'writers') })),
        });
      }
      // Load on the first database: four processes transferring as fast as they can.
      const load = await startBankLoad(join(dir, 'db0.db'), 4);
      const windows: number[] = [];
      const commits: number[] = [];
      const support = await provider.supports(dir);
      for (let s = 0; s < SETS; s++) {
        const report = await runSnapshotSet({
          kind: 'snapshot',
          backupType: 'copy',
          writers,
          paths,
          stateDir: join(work, 'state'),
          stagingDir: join(work, 'staging'),
          resolveProvider: async () => ({ provider, level: support.level }),
        });
        if (report.status !== 'succeeded') throw new Error(`set failed: ${JSON.stringify(report.error)}`);
        windows.push(report.freezeWindowMs!);
        commits.push(report.commitMs!);
      }
      await load.stop();
      await Promise.all(writers.map((w) => w.endpoint.close()));
      windows.sort((a, b) => a - b);
      commits.sort((a, b) => a - b);
      rows.push([
        name,
        plain ? `${count} + 1 GiB plain paths` : String(count),
        percentile(windows, 50).toFixed(1),
        percentile(windows, 99).toFixed(1),
        percentile(commits, 50).toFixed(1),
        `${SETS} sets`,
      ]);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
    await cleanup();
  }
}
