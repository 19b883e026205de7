// The backup pipeline alone (read, chunk, hash, compress, seal, pack), with no snapshot and no
// writers: where a first backup spends its time. Usage: node --import tsx bench/archive-throughput.ts DIR [REPO]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archive } from '../src/backup/archiver.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { initRepository } from '../src/repository/index.ts';

const source = process.argv[2];
if (!source) throw new Error('usage: archive-throughput.ts DIR [REPO]');
const repoDir = process.argv[3] ?? (await mkdtemp(join(tmpdir(), 'quiesce-archive-bench-')));
const workers = process.env.WORKERS === undefined ? {} : { workers: Number(process.env.WORKERS) };
const repository = await initRepository(await FsBackend.create(join(repoDir, 'repo')), 'bench', {
  kdf: { N: 1024, r: 8, p: 1 },
  ...workers,
});
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let peak = 0;
const peaks = { heapUsed: 0, external: 0, arrayBuffers: 0 };
const timer = setInterval(() => {
  const usage = process.memoryUsage();
  peak = Math.max(peak, usage.rss);
  for (const key of Object.keys(peaks) as (keyof typeof peaks)[]) peaks[key] = Math.max(peaks[key], usage[key]);
}, 50);
const result = await archive({ repository, sources: [{ original: source, snapshot: source }] });
await repository.flush();
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
clearInterval(timer);
await repository.close();
console.log(
  `${(result.bytesRead / 2 ** 20).toFixed(0)} MiB, ${result.files} files in ${seconds.toFixed(2)} s: ${(result.bytesRead / 2 ** 20 / seconds).toFixed(0)} MiB/s; ` +
    `CPU (this thread and workers) ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s; peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB ` +
    `(this thread: heap ${(peaks.heapUsed / 2 ** 20).toFixed(0)}, array buffers ${(peaks.arrayBuffers / 2 ** 20).toFixed(0)} MiB)`,
);
if (!process.argv[3]) await rm(repoDir, { recursive: true, force: true });
