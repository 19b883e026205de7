// Backup benchmark, side by side with restic and borgbackup (Debian packages) on the same data:
// large image-like files and many small ones. For each tool: first backup, unchanged re-backup,
// 1% changed, and restore: wall time, CPU time, peak memory, and the repository's size.
// Usage: npm run bench:backup [-- --gib 2.5 --tools quiesce,restic,borg --dir /var/tmp/qbench]
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
  },
});
const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
// quiesce reads a snapshot: put the data on an XFS loop device so its provider is reflink (an
// instant clone), as it would be on a real server; restic and borg read the same files live.
let cleanupFs = async () => {};
let root = values.dir ?? '';
if (!root) {
  const fs = await makeLoopFs('xfs', 24 * 1024);
  if ('skip' in fs) throw new Error(`give --dir: ${fs.skip}`);
  root = fs.mountPoint;
  cleanupFs = () => fs.cleanup();
}
const data = join(root, 'data');
const PASSWORD = 'benchmark password';
const env = { ...process.env, QUIESCE_PASSWORD: PASSWORD, RESTIC_PASSWORD: PASSWORD, BORG_PASSPHRASE: PASSWORD, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' };

interface Measure {
  wall: number;
  cpu: number;
  maxRssMiB: number;
}

/** Runs a command under GNU time: wall seconds, user+system seconds, peak resident set. */
function measure(cmd: string[], cwd?: string): Measure {
  const result = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', ...cmd], { env, cwd, encoding: 'utf8', maxBuffer: 1 << 28 });
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
    const content = n % 2 ? randomBytes(size) : Buffer.from(`line ${n} of a log, nothing to see here\n`.repeat(Math.ceil(size / 40)).slice(0, size));
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
      spawnSync('sh', ['-c', `cat > ${config} <<EOF
repository: ${repo}
stateDir: ${join(root, 'quiesce-state')}
stagingDir: ${join(root, 'quiesce-staging')}
registrationDir: ${join(root, 'quiesce-none')}
paths: [${data}]
EOF`]);
      measure([process.execPath, bin, 'init', '--config', config]);
    },
    // Incremental: unchanged files (size and mtime) reuse the last set's content, as restic's parent does.
    backup: () => measure([process.execPath, bin, 'backup', '--config', join(root, 'quiesce.yaml'), '--type', 'incremental']),
    restore: (_repo, target) => measure([process.execPath, bin, 'restore', 'latest', '--config', join(root, 'quiesce.yaml'), '--target', target]),
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
      const list = spawnSync('borg', ['list', '--last', '1', '--format', '{archive}', repo], { env, encoding: 'utf8' }).stdout.trim();
      return measure(['borg', 'extract', `${repo}::${list}`], target);
    },
  },
};

const names = values.tools.split(',');
await mkdir(root, { recursive: true });
process.stderr.write(`generating ${values.gib} GiB in ${data}\n`);
const total = await generate(Number(values.gib));
const rows: string[][] = [];
for (const name of names) {
  const tool = tools[name];
  if (!tool) throw new Error(`unknown tool ${name}`);
  const repo = join(root, `${name}-repo`);
  await rm(repo, { recursive: true, force: true });
  tool.init(repo);
  // Each tool starts from the same data: regenerate the 1% change on a fresh copy of the originals is costly, so run tools in order on the same sequence.
  dropCaches();
  const first = tool.backup(repo);
  const sizeFirst = du(repo);
  dropCaches();
  const unchanged = tool.backup(repo);
  rows.push([name, 'first backup', first.wall.toFixed(1), first.cpu.toFixed(1), first.maxRssMiB.toFixed(0), (sizeFirst / 2 ** 30).toFixed(2)]);
  rows.push([name, 'unchanged re-backup', unchanged.wall.toFixed(1), unchanged.cpu.toFixed(1), unchanged.maxRssMiB.toFixed(0), (du(repo) / 2 ** 30).toFixed(2)]);
  process.stderr.write(`${name}: backups done\n`);
}
// The 1% change, then every tool backs it up, then restores.
await changeOnePercent(total);
for (const name of names) {
  const tool = tools[name]!;
  const repo = join(root, `${name}-repo`);
  dropCaches();
  const changed = tool.backup(repo);
  rows.push([name, '1% changed', changed.wall.toFixed(1), changed.cpu.toFixed(1), changed.maxRssMiB.toFixed(0), (du(repo) / 2 ** 30).toFixed(2)]);
  const target = join(root, `${name}-restore`);
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { recursive: true });
  dropCaches();
  const restored = tool.restore(repo, target);
  rows.push([name, 'restore', restored.wall.toFixed(1), restored.cpu.toFixed(1), restored.maxRssMiB.toFixed(0), '']);
  await rm(target, { recursive: true, force: true });
  process.stderr.write(`${name}: changed + restore done\n`);
}
const header = ['tool', 'step', 'wall s', 'CPU s', 'peak MiB', 'repo GiB'];
console.log(`data: ${(total / 2 ** 30).toFixed(2)} GiB (3 image-like files, ${'many'} small files)`);
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map(() => '---').join('|')}|`);
for (const row of rows) console.log(`| ${row.join(' | ')} |`);
await cleanupFs();
