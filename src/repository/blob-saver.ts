import type { CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { encodeBlob, sealedLength, type SealedParts } from './blob-codec.ts';
import { BlobEncoderPool, type KeptBlob } from './blob-encoder-pool.ts';
import type { BlobIndex } from './blob-index.ts';
import { blobIdOf, sha256Hex, type RepositoryKeys } from './crypto/keys.ts';
import { encodeIndex, type IndexedPack } from './index-file.ts';
import { PackAssembler } from './pack-file.ts';
import { storageError } from './storage-error.ts';
import type { BlobType } from './types.ts';

export interface BlobSaverOptions {
  /** A pack is stored once its blobs reach this many bytes. */
  packSize: number;
  compressionLevel: number;
  /** Worker threads that compress and seal; 0 does it on the calling thread. */
  workers: number;
  /** Plaintext bytes being compressed and sealed at once; `save` waits for room beyond it. */
  maxPendingBytes: number;
  /** Packs stored at once while the next one fills. */
  maxUploads: number;
  /** An index is written after this many packs even before `flush`, to bound what a crash orphans. */
  indexEveryPacks: number;
}

/** Blobs at least this large are hashed on a worker; smaller ones cost less to hash than to send. */
const WORKER_HASH_MIN = 64 * 1024;

/**
 * The write path: compresses and seals blobs (on worker threads when asked), gathers them into
 * packs, stores each full pack, and writes the index naming stored packs. Packs first, index
 * second, always.
 *
 * Memory is bounded: at most `maxPendingBytes` of plaintext being encoded, one pack filling and
 * `maxUploads` packs being stored; `save` waits for room.
 */
export class BlobSaver {
  private readonly pool: BlobEncoderPool | null;
  /** Blobs being encoded, by id; settled once they are in the current pack. */
  private readonly encoding = new Map<string, Promise<void>>();
  private current: PackAssembler | null = null;
  /**
   * Buffers of stored packs, filled again by the next ones (as many as can be in use at once:
   * a fresh buffer costs a page fault per page it is filled through).
   */
  private readonly spare: Buffer[] = [];
  /** Blobs of packs not stored yet (filling, or built and uploading), for `loadBlob` and dedup. */
  private readonly unstored = new Map<string, { pack: PackAssembler; offset: number; length: number }>();
  private readonly uploads = new Set<Promise<void>>();
  private readonly unindexed: IndexedPack[] = [];
  /** Every pack this session stored, so a reload of the index never forgets them. */
  private readonly stored: IndexedPack[] = [];
  private failure: Error | undefined = undefined;
  private pendingBytes = 0;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly backend: Backend,
    private readonly keys: RepositoryKeys,
    private readonly index: BlobIndex,
    private readonly options: BlobSaverOptions,
  ) {
    this.pool = options.workers > 0 ? new BlobEncoderPool(keys.encryption, options.compressionLevel, options.workers, keys.mac) : null;
  }

  /**
   * The id of a blob about to be saved. A large one is hashed on a worker, which keeps a copy:
   * pass `kept` to `save`, or to `drop` when the blob turns out to be stored already.
   */
  async hash(plaintext: Uint8Array): Promise<{ id: string; kept: KeptBlob | null }> {
    const inline = () => ({ id: blobIdOf(this.keys, plaintext), kept: null });
    if (this.pool === null || plaintext.length < WORKER_HASH_MIN) return inline();
    return this.pool.hash(plaintext).catch(inline);
  }

  /** Forgets a blob `hash` kept on a worker. */
  drop(kept: KeptBlob | null): void {
    if (kept !== null) this.pool?.drop(kept);
  }

  /** Is the blob on its way into a pack in this session? */
  has(id: string): boolean {
    return this.encoding.has(id) || this.unstored.has(id);
  }

  /** Every pack stored in this session (indexed or not yet). */
  get sessionPacks(): readonly IndexedPack[] {
    return this.stored;
  }

  /** After a prune rewrote the index: this session's packs are named there or deleted. */
  forgetSessionPacks(): void {
    this.stored.length = 0;
  }

  /** Waits until a blob being encoded is in a pack (or failed). */
  async settled(id: string): Promise<void> {
    await this.encoding.get(id);
  }

  /** The sealed bytes of a blob whose pack is not stored yet. */
  unstoredBlob(id: string): Buffer | undefined {
    const blob = this.unstored.get(id);
    return blob === undefined ? undefined : blob.pack.slice(blob.offset, blob.length);
  }

  /** Encodes and packs one blob (the caller has checked it is new); answers its sealed size. */
  async save(id: string, type: BlobType, plaintext: Uint8Array, options: CallOptions = {}, kept: KeptBlob | null = null): Promise<number> {
    try {
      this.throwIfFailed();
    } catch (error) {
      this.drop(kept);
      throw error;
    }
    // Marked pending before any await, so a concurrent save of the same id deduplicates.
    let settle!: () => void;
    this.encoding.set(
      id,
      new Promise<void>((resolve) => {
        settle = resolve;
      }),
    );
    let stored: number;
    try {
      try {
        await this.reserve(plaintext.length, options.signal);
      } catch (error) {
        this.drop(kept);
        throw error;
      }
      try {
        const inline = (): SealedParts => encodeBlob(this.keys.encryption, plaintext, this.options.compressionLevel);
        // A pool that lost its workers (one crashed, or could not start) degrades to inline work.
        const sealed = this.pool === null ? inline() : await (kept === null ? this.pool.encode(plaintext) : this.pool.encodeKept(kept)).catch(inline);
        this.throwIfFailed();
        // Room for a full pack plus its last (largest) blob and the header; untouched pages cost nothing.
        if (this.current === null) {
          const capacity = this.options.packSize + 4 * 1024 * 1024 + 64 * 1024;
          // Shared memory, so a worker can hash the finished pack without a copy.
          this.current = new PackAssembler(capacity, this.spare.pop() ?? (this.pool === null ? undefined : Buffer.from(new SharedArrayBuffer(capacity))));
        }
        const entry = this.current.add(id, type, plaintext.length, sealed);
        this.unstored.set(id, { pack: this.current, offset: entry.offset, length: entry.length });
        stored = sealedLength(sealed);
      } finally {
        this.release(plaintext.length);
      }
    } finally {
      this.encoding.delete(id);
      settle();
    }
    if (this.current !== null && this.current.length >= this.options.packSize) this.finishPack();
    while (this.uploads.size > this.options.maxUploads) await Promise.race(this.uploads);
    this.throwIfFailed();
    if (this.unindexed.length >= this.options.indexEveryPacks) await this.writeIndex(options);
    return stored;
  }

  /** Stores the current pack, waits for every pack, then writes the index naming them. */
  async flush(options: CallOptions = {}): Promise<void> {
    this.throwIfFailed();
    while (this.encoding.size > 0) await Promise.all(this.encoding.values());
    if (this.current !== null && this.current.count > 0) this.finishPack(options);
    while (this.uploads.size > 0) await Promise.all(this.uploads);
    this.throwIfFailed();
    await this.writeIndex(options);
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }

  private finishPack(options: CallOptions = {}): void {
    const assembler = this.current;
    if (assembler === null) return;
    this.current = null;
    const { bytes, header } = assembler.seal(this.keys.encryption);
    // The pack's name (SHA-256 of its bytes) is computed on a worker when its buffer is shared;
    // nothing writes to the buffer until the pack is stored.
    const shared = this.pool !== null && bytes.buffer instanceof SharedArrayBuffer && bytes.byteOffset === 0 ? bytes.buffer : null;
    const naming = shared === null || this.pool === null ? Promise.resolve(sha256Hex(bytes)) : this.pool.digest(shared, bytes.length).catch(() => sha256Hex(bytes));
    let pack!: IndexedPack;
    const upload = naming
      .then((name) => {
        pack = { id: name, size: bytes.length, blobs: header.blobs };
        return this.backend.save('data', name, bytes, options.signal === undefined ? {} : { signal: options.signal });
      })
      .then(() => {
        this.index.addPack(pack);
        this.unindexed.push(pack);
        this.stored.push(pack);
        for (const entry of pack.blobs) this.unstored.delete(entry.id);
        // Nothing refers to the stored pack's bytes any more: the next pack fills its buffer.
        if (this.spare.length <= this.options.maxUploads) this.spare.push(assembler.storage);
      })
      .catch((error: unknown) => {
        this.failure ??= storageError(error, this.backend.location);
      })
      .finally(() => {
        this.uploads.delete(upload);
      });
    this.uploads.add(upload);
  }

  private async writeIndex(options: CallOptions): Promise<void> {
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed.splice(0);
    const { name, bytes } = encodeIndex(this.keys.encryption, packs);
    try {
      await this.backend.save('index', name, bytes, options);
    } catch (error) {
      this.unindexed.unshift(...packs);
      throw storageError(error, this.backend.location);
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async reserve(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    while (this.pendingBytes > 0 && this.pendingBytes + bytes > this.options.maxPendingBytes) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => {
          this.waiters.delete(wake);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          this.waiters.delete(wake);
          reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
        };
        this.waiters.add(wake);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
    this.pendingBytes += bytes;
  }

  private release(bytes: number): void {
    this.pendingBytes -= bytes;
    for (const wake of [...this.waiters]) wake();
  }
}
