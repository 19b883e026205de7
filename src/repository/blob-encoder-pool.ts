import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { PACKAGE_ROOT } from '../package-root.ts';
import type { LoadOptions } from './backend/backend.ts';
import { BufferPool } from './buffer-pool.ts';
import type { SealedParts } from './blob-codec.ts';

/**
 * Spare input buffers kept: most of the chunks in flight at once (the archiver bounds those by
 * count, the saver by bytes); more come back only in bursts, and a burst's are left to the
 * garbage collector (12 kept held about 10 MiB more at the peak, at the same speed).
 */
const MAX_SPARE = 6;

/** Blobs at least this long are opened on a worker when read back (restore, check --read-data). */
const OPEN_ON_WORKER_BYTES = 64 * 1024;

interface Job {
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
}

/** A small file to read, name and seal on a worker (see `sealFiles`). */
export interface SmallFile {
  /** Its path; bytes when it is not valid UTF-8. */
  path: string | Buffer;
  /** Its size when listed: a file read at another size is refused (`code` CHANGED). */
  size: number;
}

/** One file of a sealed batch: where its sealed blob lies in `data`, or why it could not be read. */
export type SealedFileItem =
  { id: string; rawLength: number; offset: number; length: number } | { error: string; code: string | null };

export interface SealedFileBatch {
  data: Uint8Array;
  items: SealedFileItem[];
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
  /** The blob's id, when the worker was asked to name it. */
  id?: string;
  batch?: SealedFileBatch;
  opened?: { data: ArrayBuffer; offset: number; length: number };
  error?: string;
  /** The error says the blob is not what was asked for (it does not authenticate, decompress or hash to its id). */
  damaged?: boolean;
}

/** A blob a worker could not open: it is not the blob asked for. */
export class DamagedBlobError extends Error {}

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
  /**
   * Input buffers, reused for the next blobs once the workers hand them back. Chunkers write
   * chunks straight into them (see `Repository.createChunker`), so such a chunk goes to a worker
   * without a copy.
   */
  readonly inputs = new BufferPool(MAX_SPARE);
  /** Which worker each sealed body came from, to hand its buffer back there (`releaseSealed`). */
  private readonly bodies = new WeakMap<ArrayBufferLike, PoolWorker>();

  private pending: (() => void) | null;

  /** The workers start when first needed: a backup that finds nothing new, or a listing, never pays for them. */
  constructor(key: Uint8Array, macKey: Uint8Array, level: number, size: number) {
    this.pending = () => this.start(key, macKey, level, size);
  }

  private start(key: Uint8Array, macKey: Uint8Array, level: number, size: number): void {
    for (let i = 0; i < size; i += 1) {
      const worker = new Worker(join(PACKAGE_ROOT, 'src', 'repository', 'blob-encoder-worker.mjs'), {
        workerData: { key: new Uint8Array(key), macKey: new Uint8Array(macKey), level },
        // The worker is plain JavaScript: it needs no TypeScript loader.
        execArgv: [],
        // A small young generation: the worker's garbage (cipher output pieces, file contents)
        // is mostly memory outside the heap, freed only when a collection finds its handles.
        resourceLimits: { maxYoungGenerationSizeMb: 4 },
      });
      const entry: PoolWorker = { worker, jobs: new Map() };
      worker.on('message', (reply: Reply) => this.settle(entry, reply));
      worker.on('error', (error) => this.fail(entry, error));
      worker.on('exit', (code) => this.fail(entry, new Error(`a blob encoder worker exited (code ${code})`)));
      worker.unref();
      this.workers.push(entry);
    }
  }

  /**
   * `seal(flag || zstd-or-raw(plaintext))` in pieces. A plaintext in one of `inputs`' buffers
   * (a chunk a chunker wrote there) moves to the worker: it is detached here, and comes back to
   * `inputs` for later chunks. Any other plaintext is copied, and the caller keeps it.
   */
  encode(plaintext: Uint8Array): Promise<SealedParts> {
    return this.postEncode(plaintext, false).then((reply) => reply.parts!);
  }

  /** As `encode`, and the worker names the blob too (keyed SHA-256, as `blobIdOf`). */
  encodeNamed(plaintext: Uint8Array): Promise<{ parts: SealedParts; id: string }> {
    return this.postEncode(plaintext, true).then((reply) => ({ parts: reply.parts!, id: reply.id! }));
  }

  private postEncode(plaintext: Uint8Array, name: boolean): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('the blob encoder pool is closed'));
    const target = this.leastBusy();
    if (target === undefined) return Promise.reject(new Error('the blob encoder pool has no worker'));
    let input = plaintext.buffer;
    if (plaintext.byteOffset !== 0 || !(input instanceof ArrayBuffer) || !this.inputs.owns(input)) {
      // Copied into a buffer that goes to the worker and comes back: neither thread allocates per blob.
      input = this.inputs.takeBuffer(plaintext.length);
      new Uint8Array(input, 0, plaintext.length).set(plaintext);
    }
    return this.post(target, { data: input, length: plaintext.length, name }, [input]);
  }

  /**
   * Reads small files (each no longer than the chunker's minimum, so one chunk) on a worker and
   * names, compresses and seals each there. Hand `data` back with `releaseSealed` once copied.
   */
  sealFiles(files: SmallFile[]): Promise<SealedFileBatch> {
    if (this.closed) return Promise.reject(new Error('the blob encoder pool is closed'));
    const target = this.leastBusy();
    if (target === undefined) return Promise.reject(new Error('the blob encoder pool has no worker'));
    return this.post(target, { files }, []).then((reply) => {
      this.bodies.set(reply.batch!.data.buffer, target);
      return reply.batch!;
    });
  }

  /**
   * Opens a sealed blob on a worker (decrypt, decompress, check it hashes to `id`), as
   * `verifyBlob` does on this thread. The sealed buffer moves to the worker when it owns its
   * whole ArrayBuffer (a ranged load's does), else it is copied. Rejects with DamagedBlobError
   * for a blob that is not the one asked for.
   */
  open(sealed: Uint8Array, rawLength: number, id: string): Promise<Buffer> {
    if (this.closed) return Promise.reject(new Error('the blob encoder pool is closed'));
    const target = this.leastBusy();
    if (target === undefined) return Promise.reject(new Error('the blob encoder pool has no worker'));
    let data = sealed.buffer;
    // One of `inputs` (read into by `Repository.loadBlob`) moves whole and comes back with the answer.
    const whole = sealed.byteLength === data.byteLength || (data instanceof ArrayBuffer && this.inputs.owns(data));
    if (sealed.byteOffset !== 0 || !whole || !(data instanceof ArrayBuffer)) {
      data = this.inputs.takeBuffer(sealed.length);
      new Uint8Array(data, 0, sealed.length).set(sealed);
    }
    return this.post(target, { open: { data, length: sealed.length, rawLength, id } }, [data]).then((reply) => {
      this.bodies.set(reply.opened!.data, target);
      return Buffer.from(reply.opened!.data, reply.opened!.offset, reply.opened!.length);
    });
  }

  /**
   * Opens a stored blob on a worker (see `open`), or null to open it on this thread: a small
   * blob costs less here than a message.
   */
  openLarge(sealed: Buffer, rawLength: number, id: string): Promise<Buffer> | null {
    if (sealed.length < OPEN_ON_WORKER_BYTES) return null;
    return this.open(sealed, rawLength, id);
  }

  /**
   * Memory to read a sealed blob of `length` bytes into when a worker will open it (see
   * `openLarge`): it moves to the worker and comes back for the next read. Undefined otherwise.
   */
  readInto(length: number): LoadOptions['into'] {
    if (length < OPEN_ON_WORKER_BYTES) return undefined;
    return (size) => this.inputs.take(size);
  }

  private leastBusy(): PoolWorker | undefined {
    const start = this.pending;
    this.pending = null;
    start?.();
    let target: PoolWorker | undefined;
    for (const entry of this.workers) if (target === undefined || entry.jobs.size < target.jobs.size) target = entry;
    return target;
  }

  private post(entry: PoolWorker, message: object, transfer: ArrayBuffer[]): Promise<Reply> {
    const seq = (this.seq += 1);
    return new Promise<Reply>((resolve, reject) => {
      if (entry.jobs.size === 0) entry.worker.ref();
      entry.jobs.set(seq, { resolve, reject });
      entry.worker.postMessage({ seq, ...message }, transfer);
    });
  }

  /**
   * Hands a sealed body back to the worker that made it once its bytes are copied elsewhere (into
   * a pack): the worker seals the next blobs into it instead of into fresh memory.
   */
  releaseSealed(sealed: SealedParts | SealedFileBatch): void {
    this.releaseMemory('body' in sealed ? sealed.body.buffer : sealed.data.buffer);
  }

  /** Hands memory a worker made (a sealed body, a batch, an opened blob) back to it; ignores any other. */
  releaseMemory(buffer: ArrayBufferLike): void {
    const entry = this.bodies.get(buffer);
    if (entry === undefined || !this.workers.includes(entry) || !(buffer instanceof ArrayBuffer)) return;
    this.bodies.delete(buffer);
    entry.worker.postMessage({ recycle: buffer }, [buffer]);
  }

  /** A blob a worker opened (`openLarge`), written out by the caller: its memory goes back to that worker. */
  releaseOpened(plaintext: Uint8Array): void {
    this.releaseMemory(plaintext.buffer);
  }

  /** A chunk from `inputs` that turned out not to be needed (already stored): it serves the next. */
  releaseChunk(chunk: Uint8Array): void {
    if (chunk.buffer instanceof ArrayBuffer) this.inputs.give(chunk.buffer);
  }

  private settle(entry: PoolWorker, reply: Reply): void {
    // A transferred buffer comes back as a new object: adopted, not recognised.
    if (reply.input !== undefined) this.inputs.adopt(reply.input);
    if (reply.parts !== undefined) this.bodies.set(reply.parts.body.buffer, entry);
    const job = entry.jobs.get(reply.seq);
    if (job === undefined) return;
    entry.jobs.delete(reply.seq);
    if (entry.jobs.size === 0) entry.worker.unref();
    if (reply.parts !== undefined || reply.batch !== undefined || reply.opened !== undefined) job.resolve(reply);
    else if (reply.damaged === true) job.reject(new DamagedBlobError(reply.error ?? 'damaged'));
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
    this.pending = null;
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
