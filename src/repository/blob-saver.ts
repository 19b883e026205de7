import type { CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { encodeBlob, type SealedParts } from './blob-codec.ts';
import type { BlobEncoderPool, SealedFileBatch, SmallFile } from './blob-encoder-pool.ts';
import type { BlobIndex } from './blob-index.ts';
import type { RepositoryKeys } from './crypto/keys.ts';
import { encodeIndex, type IndexedPack } from './index-file.ts';
import { PackAssembler, StreamedPack } from './pack-file.ts';
import { storageError } from './storage-error.ts';
import type { BlobType } from './repository-api.ts';

const BLOB_TYPES: readonly BlobType[] = ['data', 'tree'];
/** A pack being filled: in memory (to `save` whole), or streamed into its object (`Backend.createWriter`). */
type PackBuilder = PackAssembler | StreamedPack;
/**
 * Blobs smaller than this (trees, the tails of files) are compressed and sealed on this thread:
 * a message to a worker costs more, and a backup that stores only a few new trees never starts
 * the workers at all.
 */
const ENCODE_ON_WORKER_BYTES = 16 * 1024;

export interface BlobSaverOptions {
  /** A pack is stored once its blobs reach this many bytes. */
  packSize: number;
  compressionLevel: number;
  /** Plaintext bytes being compressed and sealed at once; `save` waits for room beyond it. */
  maxPendingBytes: number;
  /** Packs stored at once while the next one fills. */
  maxUploads: number;
  /** An index is written after this many packs even before `flush`, to bound what a crash orphans. */
  indexEveryPacks: number;
}

/**
 * The write path: compresses and seals blobs (on worker threads when asked), gathers them into
 * packs, stores each full pack, and writes the index naming stored packs. Packs first, index
 * second, always.
 *
 * Memory is bounded: at most `maxPendingBytes` of plaintext being encoded, one pack filling and
 * `maxUploads` packs being stored; `save` waits for room.
 */
export class BlobSaver {
  /** Blobs being encoded, by id; settled once they are in the current pack. */
  private readonly encoding = new Map<string, Promise<void>>();
  /** Blobs being sealed and named on a worker (`saveUnnamed`): their ids are not known yet. */
  private readonly unnamed = new Set<Promise<void>>();
  /**
   * The packs being filled: trees apart from data, so a set's directories lie together in a few
   * small packs that a later backup, restore or check reads whole, instead of one ranged read
   * each from all over the repository (restic does the same).
   */
  private readonly filling: Record<BlobType, PackBuilder | null> = { data: null, tree: null };
  /** Segment buffers of streamed packs, handed from one pack to the next. */
  private readonly segments: Buffer[] = [];
  /** The buffer of the last stored pack, filled again by the next one. */
  private spare: Buffer | undefined = undefined;
  /** Blobs of packs not stored yet (filling, or built and uploading), for `loadBlob` and dedup. */
  private readonly unstored = new Map<string, { pack: PackBuilder; offset: number; length: number }>();
  private readonly uploads = new Set<Promise<void>>();
  private readonly unindexed: IndexedPack[] = [];
  /** Every pack this session stored, so a reload of the index never forgets them. */
  private readonly stored: IndexedPack[] = [];
  private failure: Error | undefined = undefined;
  private pendingBytes = 0;
  private readonly waiters = new Set<() => void>();

  /** `pool`: the workers that encode (null: all on this thread); the caller owns and closes it. */
  constructor(
    private readonly backend: Backend,
    private readonly keys: RepositoryKeys,
    private readonly index: BlobIndex,
    private readonly pool: BlobEncoderPool | null,
    private readonly options: BlobSaverOptions,
  ) {}

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
  unstoredBlob(id: string): Promise<Buffer> | undefined {
    const blob = this.unstored.get(id);
    if (blob === undefined) return undefined;
    return blob.pack.read(blob.offset, blob.length);
  }

  /** Encodes and packs one blob (the caller has checked it is new); answers its sealed size. */
  async save(id: string, type: BlobType, plaintext: Uint8Array, options: CallOptions = {}): Promise<number> {
    this.throwIfFailed();
    // Marked pending before any await, so a concurrent save of the same id deduplicates.
    let settle!: () => void;
    this.encoding.set(
      id,
      new Promise<void>((resolve) => {
        settle = resolve;
      }),
    );
    let stored: number;
    // The plaintext may move to a worker (and read as empty here after): its length is kept now.
    const length = plaintext.length;
    try {
      await this.reserve(length, options.signal);
      try {
        const inline = (): SealedParts => encodeBlob(this.keys.encryption, plaintext, this.options.compressionLevel);
        // A pool that lost its workers (one crashed, or could not start) degrades to inline work,
        // unless the plaintext already moved to the worker (detached here): then the save fails.
        const sealed =
          this.pool === null || length < ENCODE_ON_WORKER_BYTES
            ? inline()
            : await this.pool.encode(plaintext).catch((error: unknown) => {
                if (plaintext.length !== length) throw error;
                return inline();
              });
        this.throwIfFailed();
        stored = this.pack(id, type, length, sealed);
        // Copied into the pack: the worker may seal the next blob into the same memory.
        this.pool?.releaseSealed(sealed);
        if (length < ENCODE_ON_WORKER_BYTES) this.releaseChunk(plaintext);
      } finally {
        this.releaseReserved(length);
      }
    } finally {
      this.encoding.delete(id);
      settle();
    }
    await this.afterPacking(options);
    return stored;
  }

  /**
   * Seals and names a blob on a worker, then packs it unless `known(id)`: for content that is most
   * likely new (a file the parent set did not have), naming it there spares this thread the
   * hashing, and a rare duplicate costs only its sealing. Answers null when the caller should name
   * and `save` it itself: without workers, or for a blob small enough to seal here.
   */
  async saveUnnamed(
    type: BlobType,
    plaintext: Uint8Array,
    known: (id: string) => boolean,
    options: CallOptions = {},
  ): Promise<{ id: string; added: boolean; storedBytes: number } | null> {
    const pool = this.pool;
    if (pool === null || plaintext.length < ENCODE_ON_WORKER_BYTES) return null;
    this.throwIfFailed();
    const length = plaintext.length;
    const saving = (async () => {
      await this.reserve(length, options.signal);
      try {
        let named: { parts: SealedParts; id: string };
        try {
          named = await pool.encodeNamed(plaintext);
        } catch (error) {
          // A pool that lost its workers: the caller saves it the usual way, unless the plaintext moved.
          if (plaintext.length !== length) throw error;
          return null;
        }
        this.throwIfFailed();
        // The id is checked and the blob packed with no wait between: a concurrent save of the same
        // content finds it (in `unstored`) and keeps nothing.
        if (known(named.id)) {
          pool.releaseSealed(named.parts);
          return { id: named.id, added: false, storedBytes: 0 };
        }
        const storedBytes = this.pack(named.id, type, length, named.parts);
        pool.releaseSealed(named.parts);
        return { id: named.id, added: true, storedBytes };
      } finally {
        this.releaseReserved(length);
      }
    })();
    // `flush` waits for these too: their ids are not in `encoding` until they are packed.
    const tracked: Promise<void> = saving
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => this.unnamed.delete(tracked));
    this.unnamed.add(tracked);
    const saved = await saving;
    if (saved?.added === true) await this.afterPacking(options);
    return saved;
  }

  /**
   * Packs a blob sealed elsewhere (by `sealFiles`); the caller has checked it is new. It is in
   * the pack (and deduplicates) before this first waits.
   */
  async saveSealed(
    id: string,
    type: BlobType,
    rawLength: number,
    sealed: Uint8Array,
    options: CallOptions = {},
  ): Promise<number> {
    this.throwIfFailed();
    const stored = this.pack(id, type, rawLength, sealed);
    await this.afterPacking(options);
    return stored;
  }

  /** A buffer for a chunk that `save` can hand to a worker without a copy (see `BlobEncoderPool.encode`). */
  chunkBuffer(length: number): Uint8Array {
    return this.pool === null ? Buffer.allocUnsafeSlow(length) : this.pool.inputs.take(length);
  }

  /** A chunk from `chunkBuffer` that turned out not to be needed (already stored). */
  releaseChunk(chunk: Uint8Array): void {
    this.pool?.releaseChunk(chunk);
  }

  /** Small files read, named and sealed on the workers, or null without workers. */
  sealFiles(files: SmallFile[]): Promise<SealedFileBatch> | null {
    return this.pool === null ? null : this.pool.sealFiles(files);
  }

  /** A batch's bytes are all copied into packs: its buffer may serve the next batch. */
  releaseBatch(batch: SealedFileBatch): void {
    this.pool?.releaseSealed(batch);
  }

  private pack(id: string, type: BlobType, rawLength: number, sealed: SealedParts | Uint8Array): number {
    let assembler = this.filling[type];
    if (assembler === null) {
      if (this.backend.createWriter !== undefined) {
        // Written out as it fills: the pack is never whole in memory.
        assembler = new StreamedPack(this.backend.createWriter('data'), this.segments);
      } else {
        // Data: room for a full pack plus its last (largest) blob and the header; untouched pages
        // cost nothing. Trees: a set's trees are mostly few and small; the buffer grows if not.
        assembler =
          type === 'data'
            ? new PackAssembler(this.options.packSize + 4 * 1024 * 1024 + 64 * 1024, this.spare)
            : new PackAssembler(256 * 1024);
        if (type === 'data') this.spare = undefined;
      }
      this.filling[type] = assembler;
    }
    const entry = assembler.add(id, type, rawLength, sealed);
    this.unstored.set(id, { pack: assembler, offset: entry.offset, length: entry.length });
    return entry.length;
  }

  /** Stores a pack once full; waits while too many are being stored; writes an index now and then. */
  private async afterPacking(options: CallOptions): Promise<void> {
    for (const type of BLOB_TYPES)
      if ((this.filling[type]?.length ?? 0) >= this.options.packSize) this.finishPack(type);
    // A streamed pack's writes keep up, or packing waits for them (one segment may wait).
    for (const type of BLOB_TYPES) {
      const filling = this.filling[type];
      if (filling instanceof StreamedPack && filling.backlog > 1) {
        await filling.drain(1).catch((error: unknown) => {
          this.failure ??= storageError(error, this.backend.location);
        });
      }
    }
    while (this.uploads.size > this.options.maxUploads) await Promise.race(this.uploads);
    this.throwIfFailed();
    if (this.unindexed.length >= this.options.indexEveryPacks) await this.writeIndex(options);
  }

  /** Stores the current pack, waits for every pack, then writes the index naming them. */
  async flush(options: CallOptions = {}): Promise<void> {
    this.throwIfFailed();
    while (this.encoding.size > 0 || this.unnamed.size > 0)
      await Promise.all([...this.encoding.values(), ...this.unnamed]);
    for (const type of BLOB_TYPES) if ((this.filling[type]?.count ?? 0) > 0) this.finishPack(type, options);
    while (this.uploads.size > 0) await Promise.all(this.uploads);
    this.throwIfFailed();
    await this.writeIndex(options);
  }

  async close(): Promise<void> {
    // Packs never finished (a failed or cancelled backup): their written parts are dropped.
    for (const type of BLOB_TYPES) {
      const filling = this.filling[type];
      this.filling[type] = null;
      if (filling instanceof StreamedPack) await filling.abort();
    }
  }

  private finishPack(type: BlobType, options: CallOptions = {}): void {
    const assembler = this.filling[type];
    if (assembler === null) return;
    this.filling[type] = null;
    const signal = options.signal === undefined ? {} : { signal: options.signal };
    const storing: Promise<IndexedPack> =
      assembler instanceof StreamedPack
        ? assembler
            .finish(this.keys.encryption, signal)
            .then(({ name, size, header }) => ({ id: name, size, blobs: header.blobs }))
        : (async () => {
            const built = assembler.finish(this.keys.encryption);
            await this.backend.save('data', built.name, built.bytes, signal);
            return { id: built.name, size: built.bytes.length, blobs: built.header.blobs };
          })();
    const upload = storing
      .then((pack) => {
        this.index.addPack(pack);
        this.unindexed.push(pack);
        this.stored.push(pack);
        for (const entry of pack.blobs) this.unstored.delete(entry.id);
        // Nothing refers to the stored pack's bytes any more: the next pack fills its buffer.
        if (type === 'data' && assembler instanceof PackAssembler) this.spare ??= assembler.storage;
      })
      .catch(async (error: unknown) => {
        this.failure ??= storageError(error, this.backend.location);
        if (assembler instanceof StreamedPack) await assembler.abort();
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

  private releaseReserved(bytes: number): void {
    this.pendingBytes -= bytes;
    for (const wake of [...this.waiters]) wake();
  }
}
