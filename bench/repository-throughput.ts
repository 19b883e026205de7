// Throughput of the repository's write path on this machine: the FastCDC chunker alone, then
// chunk + keyed hash + zstd + seal + pack (saveBlob) into a backend that discards what it gets,
// with and without worker threads. Prints MB/s and the peak RSS.
//   node --import tsx bench/repository-throughput.ts [MiB=512]
// RSS counts this process only: worker threads share it.
import { randomBytes } from 'node:crypto';
import { FastCdcChunker } from '../src/repository/chunker/index.ts';
import { initRepository } from '../src/repository/index.ts';
import type { Backend, ObjectInfo } from '../src/repository/backend/backend.ts';

const MIB = 1024 * 1024;
const total = Number(process.argv[2] ?? 512) * MIB;

/** Keeps config and keys, throws packs away. */
class SinkBackend implements Backend {
  readonly location = 'sink:';
  private readonly small = new Map<string, Buffer>();
  stored = 0;
  async save(type: string, name: string, data: Uint8Array): Promise<void> {
    this.stored += data.length;
    if (type !== 'data') this.small.set(`${type}/${name}`, Buffer.from(data));
  }
  async load(type: string, name: string): Promise<Buffer> {
    const data = this.small.get(`${type}/${name}`);
    if (data === undefined) throw Object.assign(new Error('not found'), { notFound: true });
    return data;
  }
  async stat(type: string, name: string): Promise<ObjectInfo> {
    return { name, size: (await this.load(type, name)).length };
  }
  async *list(type: string): AsyncIterable<ObjectInfo> {
    for (const [key, data] of this.small)
      if (key.startsWith(`${type}/`)) yield { name: key.slice(type.length + 1), size: data.length };
  }
  async remove(type: string, name: string): Promise<void> {
    this.small.delete(`${type}/${name}`);
  }
  async exists(): Promise<boolean> {
    return this.small.has('config/config');
  }
  async close(): Promise<void> {}
}

/** 16 MiB of source data, reused: random, or compressible (random words repeated). */
function source(kind: 'random' | 'mixed'): Buffer {
  const data = randomBytes(16 * MIB);
  if (kind === 'mixed') {
    const words = Array.from({ length: 512 }, () => randomBytes(6).toString('base64'));
    for (let at = 0; at < data.length; at += 2 * MIB) {
      let text = '';
      while (text.length < MIB) text += `${words[Math.floor(Math.random() * words.length)]} `;
      data.write(text.slice(0, MIB), at, 'latin1');
    }
  }
  return data;
}

let peakRss = 0;
const sample = (): void => {
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
};
// Inline encoding rarely yields to timers: the save loop samples too.
const sampler = setInterval(sample, 20);

function mbps(bytes: number, ms: number): string {
  return `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
}

async function chunkerOnly(data: Buffer): Promise<void> {
  const chunker = new FastCdcChunker(randomBytes(32));
  const started = performance.now();
  let chunks = 0;
  for (let done = 0; done < total; done += data.length) {
    for (let at = 0; at < data.length; at += MIB) chunks += chunker.update(data.subarray(at, at + MIB)).length;
  }
  chunks += chunker.finish().length;
  const ms = performance.now() - started;
  console.log(`chunker: ${mbps(total, ms)} (${chunks} chunks, mean ${(total / chunks / MIB).toFixed(2)} MiB)`);
}

async function saveAll(data: Buffer, kind: string, workers: number): Promise<void> {
  const backend = new SinkBackend();
  const repo = await initRepository(backend, 'pw', { kdf: { N: 1024, r: 8, p: 1 }, workers });
  const baseline = process.memoryUsage().rss;
  peakRss = baseline;
  const chunker = repo.createChunker();
  const inflight = new Set<Promise<unknown>>();
  const piece = Buffer.allocUnsafeSlow(MIB);
  const started = performance.now();
  // Each round saves different bytes (a new word every 4 KiB), so nothing deduplicates; the
  // piece buffer is reused, as a file reader would.
  for (let round = 0; round * data.length < total; round += 1) {
    for (let at = 0; at < data.length; at += MIB) {
      data.copy(piece, 0, at, at + MIB);
      for (let word = 0; word < piece.length; word += 4096) piece.writeUInt32LE(round, word);
      sample();
      for (const chunk of chunker.update(piece)) {
        const saving = repo.saveBlob('data', chunk).finally(() => inflight.delete(saving));
        inflight.add(saving);
        if (inflight.size >= 4) await Promise.race(inflight);
      }
    }
  }
  for (const chunk of chunker.finish()) await repo.saveBlob('data', chunk);
  await Promise.all(inflight);
  await repo.flush();
  const ms = performance.now() - started;
  await repo.close();
  console.log(
    `saveBlob ${kind}, workers ${workers}: ${mbps(total, ms)} (stored ${((backend.stored / total) * 100).toFixed(0)}%, ` +
      `peak RSS ${(peakRss / MIB).toFixed(0)} MiB: ${((peakRss - baseline) / MIB).toFixed(0)} MiB above the start, which holds ${(data.length / MIB).toFixed(0)} MiB of source data)`,
  );
}

const [, , , mode, kind, workers] = process.argv;
if (mode === undefined) {
  // Each measurement in a process of its own, so one's garbage does not weigh on the next's RSS.
  const { execFileSync } = await import('node:child_process');
  const self = new URL(import.meta.url).pathname;
  const run = (...args: string[]): void => {
    process.stdout.write(
      execFileSync(process.execPath, ['--import', 'tsx', self, String(total / MIB), ...args], { encoding: 'utf8' }),
    );
  };
  run('chunker');
  for (const k of ['random', 'mixed']) for (const w of ['0', '1', '2']) run('save', k, w);
} else if (mode === 'chunker') {
  await chunkerOnly(source('random'));
} else {
  await saveAll(source(kind === 'mixed' ? 'mixed' : 'random'), kind ?? 'random', Number(workers ?? 2));
}
clearInterval(sampler);
