import { Worker } from 'node:worker_threads';
import type { SealedParts } from './blob-codec.ts';

const MIB = 1024 * 1024;
/** Spare input buffers kept: enough for every job in flight (the saver bounds those by bytes). */
const MAX_SPARE = 24;

interface Job {
  resolve: (sealed: SealedParts) => void;
  reject: (error: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
}

interface Reply {
  seq: number;
  /** The input buffer, handed back for reuse. */
  input?: ArrayBuffer;
  parts?: SealedParts;
  error?: string;
}

/**
 * A few worker threads that compress and seal blobs (blob-codec's format), so hashing and
 * chunking on the main thread overlap with zstd and AES on the others.
 *
 * Workers hold the event loop only while they have jobs, so an idle pool never keeps the
 * process alive; `close` terminates them.
 */
export class BlobEncoderPool {
  private readonly workers: PoolWorker[] = [];
  private seq = 0;
  private closed = false;
  /** Input buffers that came back from the workers, reused for the next blobs. */
  private readonly spare: ArrayBuffer[] = [];

  constructor(key: Uint8Array, level: number, size: number) {
    for (let i = 0; i < size; i += 1) {
      const worker = new Worker(new URL('./blob-encoder-worker.mjs', import.meta.url), {
        workerData: { key: new Uint8Array(key), level },
        // The worker is plain JavaScript: it needs no TypeScript loader.
        execArgv: [],
      });
      const entry: PoolWorker = { worker, jobs: new Map() };
      worker.on('message', (reply: Reply) => this.settle(entry, reply));
      worker.on('error', (error) => this.fail(entry, error));
      worker.on('exit', (code) => this.fail(entry, new Error(`a blob encoder worker exited (code ${code})`)));
      worker.unref();
      this.workers.push(entry);
    }
  }

  /** `seal(flag || zstd-or-raw(plaintext))` in pieces; the plaintext is copied, the caller keeps it. */
  encode(plaintext: Uint8Array): Promise<SealedParts> {
    if (this.closed) return Promise.reject(new Error('the blob encoder pool is closed'));
    let target: PoolWorker | undefined;
    for (const entry of this.workers) if (target === undefined || entry.jobs.size < target.jobs.size) target = entry;
    if (target === undefined) return Promise.reject(new Error('the blob encoder pool has no worker'));
    const chosen = target;
    const seq = (this.seq += 1);
    // Copied into a buffer that goes to the worker and comes back: the caller keeps its
    // plaintext, and neither thread allocates per blob.
    const input = this.takeBuffer(plaintext.length);
    new Uint8Array(input, 0, plaintext.length).set(plaintext);
    return new Promise<SealedParts>((resolve, reject) => {
      if (chosen.jobs.size === 0) chosen.worker.ref();
      chosen.jobs.set(seq, { resolve, reject });
      chosen.worker.postMessage({ seq, data: input, length: plaintext.length }, [input]);
    });
  }

  private takeBuffer(length: number): ArrayBuffer {
    let best = -1;
    for (let i = 0; i < this.spare.length; i += 1) {
      const size = this.spare[i]!.byteLength;
      if (size >= length && (best < 0 || size < this.spare[best]!.byteLength)) best = i;
    }
    if (best >= 0) return this.spare.splice(best, 1)[0]!;
    // Whole MiBs, so a buffer serves the next chunks of other sizes too.
    return new ArrayBuffer(Math.max(1, Math.ceil(length / MIB)) * MIB);
  }

  private settle(entry: PoolWorker, reply: Reply): void {
    if (reply.input !== undefined && this.spare.length < MAX_SPARE) this.spare.push(reply.input);
    const job = entry.jobs.get(reply.seq);
    if (job === undefined) return;
    entry.jobs.delete(reply.seq);
    if (entry.jobs.size === 0) entry.worker.unref();
    if (reply.parts !== undefined) job.resolve(reply.parts);
    else job.reject(new Error(`blob encoding failed: ${reply.error ?? 'unknown error'}`));
  }

  private fail(entry: PoolWorker, error: Error): void {
    const index = this.workers.indexOf(entry);
    if (index >= 0) this.workers.splice(index, 1);
    for (const job of entry.jobs.values()) job.reject(error);
    entry.jobs.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0);
    await Promise.all(
      workers.map(async (entry) => {
        for (const job of entry.jobs.values()) job.reject(new Error('the blob encoder pool is closed'));
        entry.jobs.clear();
        await entry.worker.terminate();
      }),
    );
  }
}
