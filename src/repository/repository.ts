import { readFile } from 'node:fs/promises';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { BlobEncoderPool, type SmallFile } from './blob-encoder-pool.ts';
import { gatherBlobs } from './blob-gather.ts';
import { BlobIndex } from './blob-index.ts';
import { readBlob, verifyBlob } from './blob-reader.ts';
import { BlobSaver } from './blob-saver.ts';
import { checkRepository, type CheckOptions, type CheckReport } from './check.ts';
import { FastCdcChunker } from './chunker/fastcdc.ts';
import { gearTable } from './chunker/gear-table.ts';
import { blobIdOf, deriveKeys, type KdfParams, type RepositoryKeys } from './crypto/keys.ts';
import { listIndexes, loadIndexes } from './index-file.ts';
import { KeyRing, type SessionKeyInfo } from './key-ring.ts';
import { Locker, type LockOptions } from './locks.ts';
import { Manifests } from './manifests.ts';
import { pruneRepository, type PruneOptions, type PruneReport } from './prune.ts';
import { repairIndex, repairPacks, type RepairIndexReport, type RepairPacksReport } from './repair.ts';
import type {
  BlobType,
  Chunker,
  ManifestEnvelope,
  Repository,
  RepositoryLock,
  SaveBlobOptions,
  SaveBlobResult,
  SmallFileResult,
} from './repository-api.ts';
import { CONFIG_NAME, decodeConfig, type RepositoryConfig } from './repository-config.ts';
import type { RepositoryInternals } from './repository-internals.ts';
import type { Tree } from './tree.ts';
import { serializeTree } from './tree-blob.ts';
import { TreeCache } from './tree-cache.ts';

/** What a repository session opens with (see open.ts): the secret, the key that opened it, the settings. */
export interface Session {
  backend: Backend;
  master: Buffer;
  /** The key file this session's password opened. */
  keyName: string;
  config: RepositoryConfig;
  packSize: number;
  workers: number;
  maxPendingBytes: number;
  kdf: KdfParams;
  lock: LockOptions | undefined;
  onWarning: (message: string) => void;
}

/**
 * A repository session: the blob API, locks and the check and prune façades here; opening in
 * open.ts, trees in tree-cache.ts, ranged reads in blob-gather.ts, keys in key-ring.ts and
 * manifests in manifests.ts.
 */
export class QuiesceRepository implements Repository, RepositoryInternals {
  readonly id: string;
  readonly backend: Backend;
  readonly keys: RepositoryKeys;
  readonly packSize: number;
  readonly index = new BlobIndex();
  readonly saver: BlobSaver;
  /** The workers that encode and open blobs, and own the memory that moves to them; null: all here. */
  private readonly pool: BlobEncoderPool | null;
  /** The index objects `index` was loaded from, null when it must be read again. */
  private indexNames: ReadonlySet<string> | null = null;
  private readonly trees: TreeCache;
  private readonly manifests: Manifests;
  private readonly keyRing: KeyRing;
  private readonly locker: Locker;
  private readonly gear: Uint32Array;
  private readonly config: RepositoryConfig;
  private readonly onWarning: (message: string) => void;
  /** Index objects that did not open at the last load, and those already warned of. */
  private damagedIndexes: readonly string[] = [];
  private readonly warnedIndexes = new Set<string>();
  private closed = false;

  private constructor(session: Session) {
    const { backend, config } = session;
    this.backend = backend;
    this.config = config;
    this.onWarning = session.onWarning;
    this.id = config.id;
    this.keys = deriveKeys(session.master);
    this.packSize = session.packSize;
    this.gear = gearTable(this.keys.chunkerSeed);
    this.pool =
      session.workers > 0
        ? new BlobEncoderPool(this.keys.encryption, this.keys.mac, config.compression.level, session.workers)
        : null;
    this.saver = new BlobSaver(backend, this.keys, this.index, this.pool, {
      packSize: this.packSize,
      compressionLevel: config.compression.level,
      maxPendingBytes: session.maxPendingBytes,
      maxUploads: 1,
      indexEveryPacks: 64,
    });
    this.trees = new TreeCache(this);
    this.manifests = new Manifests(backend, this.keys);
    this.keyRing = new KeyRing(backend, session.master, session.keyName, session.kdf);
    this.locker = new Locker(backend, this.keys.encryption, session.lock);
  }

  static async start(session: Session, options: CallOptions): Promise<QuiesceRepository> {
    const repo = new QuiesceRepository(session);
    try {
      await repo.reloadIndex(options);
    } catch (error) {
      await repo.close();
      throw error;
    }
    return repo;
  }

  get repo(): Repository {
    return this;
  }

  createChunker(allocate?: (length: number) => Uint8Array): Chunker {
    return new FastCdcChunker(this.gear, this.config.chunker, allocate ?? ((length) => this.saver.chunkBuffer(length)));
  }

  blobId(plaintext: Uint8Array): string {
    return blobIdOf(this.keys, plaintext);
  }

  hasBlob(id: string): boolean {
    return this.index.has(id) || this.saver.has(id);
  }

  async saveBlob(type: BlobType, plaintext: Uint8Array, options: SaveBlobOptions = {}): Promise<SaveBlobResult> {
    this.assertOpen();
    options.signal?.throwIfAborted();
    if (options.likelyNew === true) {
      const saved = await this.saver.saveUnnamed(type, plaintext, (id) => this.hasBlob(id), options);
      if (saved !== null) return saved;
    }
    const id = this.blobId(plaintext);
    if (this.hasBlob(id)) {
      this.saver.releaseChunk(plaintext);
      return { id, added: false, storedBytes: 0 };
    }
    const storedBytes = await this.saver.save(id, type, plaintext, options);
    return { id, added: true, storedBytes };
  }

  async saveSmallFiles(files: SmallFile[], options: CallOptions = {}): Promise<SmallFileResult[]> {
    this.assertOpen();
    options.signal?.throwIfAborted();
    const limit = this.config.chunker.minSize;
    if (files.some((file) => file.size > limit || file.size <= 0))
      throw new RangeError(`saveSmallFiles takes files of 1 to ${limit} bytes`);
    // A pool that lost its workers degrades to reading and saving here.
    const batch = await (this.saver.sealFiles(files)?.catch(() => null) ?? null);
    if (batch === null) return Promise.all(files.map((file) => this.saveFileHere(file, options)));
    const results: SmallFileResult[] = [];
    try {
      for (const item of batch.items) {
        if ('error' in item) results.push(item);
        else if (this.hasBlob(item.id)) results.push({ id: item.id, added: false, storedBytes: 0 });
        else {
          const sealed = batch.data.subarray(item.offset, item.offset + item.length);
          results.push({
            id: item.id,
            added: true,
            storedBytes: await this.saver.saveSealed(item.id, 'data', item.rawLength, sealed, options),
          });
        }
      }
    } finally {
      this.saver.releaseBatch(batch);
    }
    return results;
  }

  private async saveFileHere(file: SmallFile, options: CallOptions): Promise<SmallFileResult> {
    let content: Buffer;
    try {
      content = await readFile(file.path);
    } catch (error) {
      return { error: (error as Error).message, code: (error as NodeJS.ErrnoException).code ?? null };
    }
    if (content.length !== file.size)
      return { error: `it was ${file.size} bytes when listed and ${content.length} when read`, code: 'CHANGED' };
    return this.saveBlob('data', content, options);
  }

  async loadBlob(id: string, options: CallOptions = {}): Promise<Buffer> {
    this.assertOpen();
    options.signal?.throwIfAborted();
    await this.saver.settled(id);
    const unstored = this.saver.unstoredBlob(id);
    if (unstored !== undefined) return verifyBlob(this.keys, id, await unstored, '(not stored yet)');
    const location = this.index.get(id);
    if (location === undefined) {
      throw new QuiesceError(
        'damaged',
        this.damagedIndexes.length === 0
          ? `blob ${id} is not in the repository at ${this.backend.location}: no index names it (run quiesce check; when it finds packs that no index names, quiesce repair index)`
          : `blob ${id} is not in the index of the repository at ${this.backend.location}, and index ${this.damagedIndexes.map((n) => `index/${n}`).join(', ')} is damaged: run quiesce repair index`,
      );
    }
    // A blob a worker will open is read into memory that goes to the worker and comes back.
    const pool = this.pool;
    const into = pool?.readInto(location.length);
    return readBlob(
      this.backend,
      this.keys,
      id,
      location,
      into === undefined ? options : { ...options, into },
      pool === null ? undefined : (sealed, rawLength) => pool.openLarge(sealed, rawLength, id),
    );
  }

  releaseBlob(plaintext: Uint8Array): void {
    this.pool?.releaseOpened(plaintext);
  }

  loadBlobs(ids: readonly string[], options: CallOptions = {}): Map<string, Promise<Buffer>> {
    this.assertOpen();
    return gatherBlobs(this, ids, options);
  }

  async saveTree(tree: Tree, options: CallOptions = {}): Promise<SaveBlobResult> {
    return this.saveBlob('tree', serializeTree(tree), options);
  }

  loadTree(id: string, options: CallOptions = {}): Promise<Tree> {
    return this.trees.loadTree(id, options);
  }

  async flush(options: CallOptions = {}): Promise<void> {
    this.assertOpen();
    await this.saver.flush(options);
  }

  async saveManifest(manifest: ManifestEnvelope, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    return this.manifests.save(
      manifest,
      (id) => this.hasBlob(id),
      (flushOptions) => this.flush(flushOptions),
      options,
    );
  }

  loadManifest(id: string, options: CallOptions = {}): Promise<ManifestEnvelope> {
    return this.manifests.load(id, options);
  }

  listManifests(options: CallOptions = {}): Promise<string[]> {
    return this.manifests.list(options);
  }

  removeManifest(id: string, options: CallOptions = {}): Promise<void> {
    return this.manifests.remove(id, options);
  }

  /** Takes the lock, then re-reads the index, so dedup decisions are made under the lock. */
  async lock(kind: 'shared' | 'exclusive', options: CallOptions = {}): Promise<RepositoryLock> {
    this.assertOpen();
    const held = await this.locker.lock(kind, options);
    try {
      await this.reloadIndex(options);
    } catch (error) {
      await held.release();
      throw error;
    }
    return held;
  }

  async check(options: CheckOptions = {}): Promise<CheckReport> {
    this.assertOpen();
    return checkRepository(this, options);
  }

  async prune(options: PruneOptions = {}): Promise<PruneReport> {
    this.assertOpen();
    return pruneRepository(this, options);
  }

  async repairIndex(options: CallOptions = {}): Promise<RepairIndexReport> {
    this.assertOpen();
    return repairIndex(this, options);
  }

  async repairPacks(options: CallOptions = {}): Promise<RepairPacksReport> {
    this.assertOpen();
    return repairPacks(this, options);
  }

  async addPassword(password: string, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    return this.keyRing.addPassword(password, options);
  }

  async listKeys(options: CallOptions = {}): Promise<SessionKeyInfo[]> {
    this.assertOpen();
    return this.keyRing.listKeys(options);
  }

  async removeKey(id: string, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    return this.keyRing.removeKey(id, options);
  }

  /** Stops the worker threads. Unflushed blobs are dropped (flush first); the backend stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.saver.close();
    await this.pool?.close();
  }

  async verifyConfig(options: CallOptions = {}): Promise<void> {
    decodeConfig(this.keys.encryption, await this.backend.load('config', CONFIG_NAME, options), this.backend.location);
  }

  async reloadIndex(options: CallOptions = {}): Promise<void> {
    const names = await listIndexes(this.backend, options);
    // Index objects are immutable and named by their content: the same names, the same index.
    // (A backup locks right after opening: this spares it reading the whole index twice.)
    if (
      this.indexNames !== null &&
      names.length === this.indexNames.size &&
      names.every((n) => this.indexNames!.has(n))
    )
      return;
    this.indexNames = null;
    const { files, damaged } = await loadIndexes(this.backend, this.keys.encryption, names, options);
    this.noteDamagedIndexes(damaged);
    this.index.clear();
    for (const { file } of files) for (const pack of file.packs) this.index.addPack(pack);
    for (const pack of this.saver.sessionPacks) this.index.addPack(pack);
    this.indexNames = new Set(names);
  }

  /** Index objects that did not open at the last load (their blobs look missing until `repair index`). */
  get damagedIndexNames(): readonly string[] {
    return this.damagedIndexes;
  }

  private noteDamagedIndexes(damaged: readonly { name: string; message: string }[]): void {
    this.damagedIndexes = damaged.map((d) => d.name).sort();
    for (const { name, message } of damaged) {
      if (this.warnedIndexes.has(name)) continue;
      this.warnedIndexes.add(name);
      this.onWarning(
        `index object index/${name} of the repository at ${this.backend.location} is damaged (${message}): the blobs it lists look missing until you run quiesce repair index`,
      );
    }
  }

  async reloadAfterPrune(options: CallOptions = {}): Promise<void> {
    this.saver.forgetSessionPacks();
    this.indexNames = null;
    try {
      await this.reloadIndex(options);
    } catch (error) {
      // Never keep entries a prune may have deleted: with an empty index the session re-stores.
      this.index.clear();
      throw error;
    }
  }

  assertOpen(): void {
    if (this.closed) throw new QuiesceError('bad-usage', 'the repository is closed');
  }
}
