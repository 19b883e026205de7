import { Worker } from 'node:worker_threads';
import type { SealedParts } from './blob-codec.ts';

const MIB = 1024 * 1024;
/** Spare input buffers kept: enough for every job in flight (the saver bounds those by bytes). */
const MAX_SPARE = 16;

interface Job {
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
}

/** A plaintext a worker hashed and keeps until it is encoded or dropped. */
export interface KeptBlob {
  readonly worker: PoolWorker;
  readonly seq: number;
}

export interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
}

interface Reply {
  seq: number;
  /** The input buffer, handed back for reuse. */
  input?: ArrayBuffer;
  parts?: SealedParts;
  /** A blob id (hash) or a digest. */
  id?: string;
  name?: string;
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

  constructor(key: Uint8Array, level: number, size: number, mac: Uint8Array) {
    for (let i = 0; i < size; i += 1) {
      const worker = new Worker(new URL('./blob-encoder-worker.mjs', import.meta.url), {
        workerData: { key: new Uint8Array(key), level, mac: new Uint8Array(mac) },
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
    return this.send(null, (seq, input) => ({ seq, data: input, length: plaintext.length }), plaintext).then(sealedOf);
  }

  /**
   * The blob id of `plaintext` (HMAC-SHA256 under `mac`), computed on a worker, which keeps a
   * copy of the plaintext: the caller then either `encodeKept` or `drop`s it (exactly one).
   */
  async hash(plaintext: Uint8Array): Promise<{ id: string; kept: KeptBlob }> {
    let seq = 0;
    let worker: PoolWorker | undefined;
    const reply = await this.send(null, (s, input, chosen) => {
      seq = s;
      worker = chosen;
      return { seq: s, op: 'hash', data: input, length: plaintext.length };
    }, plaintext);
    if (reply.id === undefined || worker === undefined) throw new Error(`blob hashing failed: ${reply.error ?? 'no id'}`);
    return { id: reply.id, kept: { worker, seq } };
  }

  /** Compresses and seals a plaintext `hash` kept. */
  encodeKept(kept: KeptBlob): Promise<SealedParts> {
    return this.send(kept.worker, () => ({ seq: kept.seq, op: 'encode' }), null, kept.seq).then(sealedOf);
  }

  /** Forgets a plaintext `hash` kept (its buffer comes back for reuse). */
  drop(kept: KeptBlob): void {
    this.send(kept.worker, () => ({ seq: kept.seq, op: 'drop' }), null, kept.seq).catch(() => undefined);
  }

  /** SHA-256 hex of `shared[0, length)` on a worker; the caller leaves those bytes alone meanwhile. */
  async digest(shared: SharedArrayBuffer, length: number): Promise<string> {
    const reply = await this.send(null, (seq) => ({ seq, op: 'digest', shared, length }), null);
    if (reply.name === undefined) throw new Error(`pack hashing failed: ${reply.error ?? 'no digest'}`);
    return reply.name;
  }

  /**
   * Posts one message to `to` (or the least busy worker) and answers its reply. A `plaintext` is
   * copied into a buffer that goes to the worker and comes back: the caller keeps its plaintext,
   * and neither thread allocates per blob.
   */
  private send(
    to: PoolWorker | null,
    message: (seq: number, input: ArrayBuffer | undefined, worker: PoolWorker) => object,
    plaintext: Uint8Array | null,
    seq = (this.seq += 1),
  ): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('the blob encoder pool is closed'));
    let target: PoolWorker | undefined;
    if (to !== null) target = this.workers.includes(to) ? to : undefined;
    else for (const entry of this.workers) if (target === undefined || entry.jobs.size < target.jobs.size) target = entry;
    if (target === undefined) return Promise.reject(new Error('the blob encoder pool has no worker'));
    const chosen = target;
    let input: ArrayBuffer | undefined;
    if (plaintext !== null) {
      input = this.takeBuffer(plaintext.length);
      new Uint8Array(input, 0, plaintext.length).set(plaintext);
    }
    return new Promise<Reply>((resolve, reject) => {
      if (chosen.jobs.size === 0) chosen.worker.ref();
      chosen.jobs.set(seq, { resolve, reject });
      chosen.worker.postMessage(message(seq, input, chosen), input === undefined ? [] : [input]);
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
    if (reply.error === undefined) job.resolve(reply);
    else job.reject(new Error(`blob encoding failed: ${reply.error}`));
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

function sealedOf(reply: Reply): SealedParts {
  if (reply.parts === undefined) throw new Error('blob encoding failed: no sealed parts');
  return reply.parts;
}
