// Backup benchmark, side by side with restic and borgbackup (Debian packages) on the same data:
// large image-like files and many small ones. For each tool: first backup, unchanged re-backup,
// 1% changed, and restore: wall time, CPU time, peak memory, and the repository's size.
// Usage: npm run bench:backup [-- --gib 2.5 --tools quiesce,restic,borg --runs 3 --dir /var/tmp/qbench]
// With --runs N, the first and unchanged backups run N times, the tools taking turns, and the
// table shows the median run's figures, with every run's wall time in parentheses.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { makeLoopFs } from '../test/helpers/loop-fs.ts';

const { values } = parseArgs({
  options: {
    gib: { type: 'string', default: '2.5' },
    tools: { type: 'string', default: 'quiesce,restic,borg' },
    dir: { type: 'string' },
    runs: { type: 'string', default: '3' },
  },
});
const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
// quiesce reads a snapshot: put the data on an XFS loop device so its provider is reflink (an
// instant clone), as it would be on a real server; restic and borg read the same files live.
// The loop device does direct I/O on its image, like a disk: a buffered one caches every byte
// twice and spends a kernel thread copying it, which no real server does.
let cleanupFs = async () => {};
let root = values.dir ?? '';
if (!root) {
  const fs = await makeLoopFs('xfs', 24 * 1024, { directIo: true });
  if ('skip' in fs) throw new Error(`give --dir: ${fs.skip}`);
  root = fs.mountPoint;
  cleanupFs = () => fs.cleanup();
}
const data = join(root, 'data');
const PASSWORD = 'benchmark password';
const env = {
  ...process.env,
  QUIESCE_PASSWORD: PASSWORD,
  RESTIC_PASSWORD: PASSWORD,
  BORG_PASSPHRASE: PASSWORD,
  BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
  BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
};

interface Measure {
  wall: number;
  cpu: number;
  maxRssMiB: number;
}

/** Runs a command under GNU time: wall seconds, user+system seconds, peak resident set. */
function measure(cmd: string[], cwd?: string): Measure {
  const result = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', ...cmd], {
    env,
    cwd,
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  if (result.status !== 0) throw new Error(`${cmd.join(' ')} failed (${result.status}): ${result.stderr.slice(-2000)}`);
  const last = result.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return { wall: last[0]!, cpu: last[1]! + last[2]!, maxRssMiB: last[3]! / 1024 };
}

function du(path: string): number {
  return Number(spawnSync('du', ['-sb', path], { encoding: 'utf8' }).stdout.split('\t')[0]);
}

function dropCaches(): void {
  spawnSync('sync');
  if (existsSync('/proc/sys/vm/drop_caches')) spawnSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
}

async function generate(totalGiB: number): Promise<number> {
  await rm(data, { recursive: true, force: true });
  await mkdir(join(data, 'images'), { recursive: true });
  const total = Math.round(totalGiB * (1 << 30));
  const small = Math.round(total * 0.12);
  const large = total - small;
  // Image-like: incompressible, three large files.
  for (let i = 0; i < 3; i++) {
    const handle = await open(join(data, 'images', `disk-${i}.img`), 'w');
    const size = Math.floor(large / 3);
    for (let off = 0; off < size; off += 16 << 20) await handle.write(randomBytes(Math.min(16 << 20, size - off)));
    await handle.close();
  }
  // Many small files: text-like (compressible) and random, 1–64 KiB, in 200 directories.
  let written = 0;
  let n = 0;
  while (written < small) {
    const dirName = join(data, 'small', `d${n % 200}`);
    if (n < 200) await mkdir(dirName, { recursive: true });
    const size = 1024 + ((n * 7919) % (63 * 1024));
    const content =
      n % 2
        ? randomBytes(size)
        : Buffer.from(`line ${n} of a log, nothing to see here\n`.repeat(Math.ceil(size / 40)).slice(0, size));
    await writeFile(join(dirName, `f${n}.dat`), content);
    written += size;
    n++;
  }
  return total;
}

async function changeOnePercent(total: number): Promise<void> {
  // 1%: one region in each image.
  for (let i = 0; i < 3; i++) {
    const handle = await open(join(data, 'images', `disk-${i}.img`), 'r+');
    const size = Math.floor(total / 100 / 3);
    await handle.write(randomBytes(size), 0, size, (i + 1) * (64 << 20));
    await handle.close();
  }
}

type Tool = {
  name: string;
  init(repo: string): void;
  backup(repo: string): Measure;
  restore(repo: string, target: string): Measure;
};

const tools: Record<string, Tool> = {
  quiesce: {
    name: 'quiesce',
    init: (repo) => {
      const config = join(root, 'quiesce.yaml');
      spawnSync('sh', [
        '-c',
        `cat > ${config} <<EOF
repository: ${repo}
stateDir: ${join(root, 'quiesce-state')}
stagingDir: ${join(root, 'quiesce-staging')}
registrationDir: ${join(root, 'quiesce-none')}
paths: [${data}]
EOF`,
      ]);
      measure([process.execPath, bin, 'init', '--config', config]);
    },
    // Incremental: unchanged files (size and mtime) reuse the last set's content, as restic's parent does.
    backup: () =>
      measure([process.execPath, bin, 'backup', '--config', join(root, 'quiesce.yaml'), '--type', 'incremental']),
    restore: (_repo, target) =>
      measure([process.execPath, bin, 'restore', 'latest', '--config', join(root, 'quiesce.yaml'), '--target', target]),
  },
  restic: {
    name: 'restic',
    init: (repo) => void measure(['restic', 'init', '-r', repo]),
    backup: (repo) => measure(['restic', 'backup', '-q', '-r', repo, data]),
    restore: (repo, target) => measure(['restic', 'restore', '-q', '-r', repo, 'latest', '--target', target]),
  },
  borg: {
    name: 'borg',
    init: (repo) => void measure(['borg', 'init', '-e', 'repokey-blake2', repo]),
    backup: (repo) => measure(['borg', 'create', '--compression', 'zstd,3', `${repo}::b${Date.now()}`, data]),
    restore: (repo, target) => {
      const list = spawnSync('borg', ['list', '--last', '1', '--format', '{archive}', repo], {
        env,
        encoding: 'utf8',
      }).stdout.trim();
      return measure(['borg', 'extract', `${repo}::${list}`], target);
    },
  },
};

/** The run of median wall time (its CPU and memory with it): one slow moment of a noisy machine does not decide. */
function median(measures: Measure[]): Measure {
  return [...measures].sort((a, b) => a.wall - b.wall)[Math.floor((measures.length - 1) / 2)]!;
}

const names = values.tools.split(',');
for (const name of names) if (!tools[name]) throw new Error(`unknown tool ${name}`);
const runs = Math.max(1, Number.parseInt(values.runs, 10) || 1);
await mkdir(root, { recursive: true });
process.stderr.write(`generating ${values.gib} GiB in ${data}\n`);
const total = await generate(Number(values.gib));
const rows: string[][] = [];
// First and unchanged backups `runs` times, each into a fresh repository, the tools taking turns
// so that a slow spell of the machine falls on all of them alike.
const firsts = new Map<string, Measure[]>(names.map((name) => [name, []]));
const unchangeds = new Map<string, Measure[]>(names.map((name) => [name, []]));
const sizes = new Map<string, { first: number; unchanged: number }>();
for (let run = 1; run <= runs; run++) {
  for (const name of names) {
    const tool = tools[name]!;
    const repo = join(root, `${name}-repo`);
    await rm(repo, { recursive: true, force: true });
    tool.init(repo);
    dropCaches();
    firsts.get(name)!.push(tool.backup(repo));
    const first = du(repo);
    dropCaches();
    unchangeds.get(name)!.push(tool.backup(repo));
    sizes.set(name, { first, unchanged: du(repo) });
    process.stderr.write(`${name}: backups of run ${run} of ${runs} done\n`);
  }
}
for (const name of names) {
  const first = median(firsts.get(name)!);
  const unchanged = median(unchangeds.get(name)!);
  const size = sizes.get(name)!;
  const all = (measures: Measure[]) => (runs > 1 ? ` (${measures.map((m) => m.wall.toFixed(1)).join(', ')})` : '');
  rows.push([
    name,
    'first backup',
    first.wall.toFixed(1) + all(firsts.get(name)!),
    first.cpu.toFixed(1),
    first.maxRssMiB.toFixed(0),
    (size.first / 2 ** 30).toFixed(2),
  ]);
  rows.push([
    name,
    'unchanged re-backup',
    unchanged.wall.toFixed(1) + all(unchangeds.get(name)!),
    unchanged.cpu.toFixed(1),
    unchanged.maxRssMiB.toFixed(0),
    (size.unchanged / 2 ** 30).toFixed(2),
  ]);
}
// The 1% change, then every tool backs it up, then restores.
await changeOnePercent(total);
for (const name of names) {
  const tool = tools[name]!;
  const repo = join(root, `${name}-repo`);
  dropCaches();
  const changed = tool.backup(repo);
  rows.push([
    name,
    '1% changed',
    changed.wall.toFixed(1),
    changed.cpu.toFixed(1),
    changed.maxRssMiB.toFixed(0),
    (du(repo) / 2 ** 30).toFixed(2),
  ]);
  const target = join(root, `${name}-restore`);
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { recursive: true });
  dropCaches();
  const restored = tool.restore(repo, target);
  rows.push([name, 'restore', restored.wall.toFixed(1), restored.cpu.toFixed(1), restored.maxRssMiB.toFixed(0), '']);
  await rm(target, { recursive: true, force: true });
  process.stderr.write(`${name}: changed + restore done\n`);
}
const header = [
  'tool',
  'step',
  runs > 1 ? `wall s, median of ${runs} (each run)` : 'wall s',
  'CPU s',
  'peak MiB',
  'repo GiB',
];
console.log(`data: ${(total / 2 ** 30).toFixed(2)} GiB (3 image-like files, ${'many'} small files)`);
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map(() => '---').join('|')}|`);
for (const row of rows) console.log(`| ${row.join(' | ')} |`);
await cleanupFs();
