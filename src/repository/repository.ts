import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import type { CallOptions } from '../model/index.ts';
import { QuiesceError } from '../model/failure.ts';
import type { Backend } from './backend/backend.ts';
import { BlobIndex } from './blob-index.ts';
import { loadPack, readBlob, verifyBlob } from './blob-reader.ts';
import type { SmallFile } from './blob-encoder-pool.ts';
import { BlobSaver } from './blob-saver.ts';
import { checkRepository, type CheckReport } from './check.ts';
import {
  DEFAULT_CHUNKER_PARAMS,
  FastCdcChunker,
  validateChunkerParams,
  type ChunkerParams,
} from './chunker/fastcdc.ts';
import { gearTable } from './chunker/gear-table.ts';
import { DEFAULT_COMPRESSION_LEVEL } from './compression.ts';
import {
  checkConfigPrefix,
  decodeConfig,
  encodeConfig,
  sealedConfig,
  type RepositoryConfig,
} from './repository-config.ts';
import {
  addKey,
  blobIdOf,
  DEFAULT_KDF,
  deriveKeys,
  listKeyFiles,
  newMasterSecret,
  openMasterSecret,
  sha256Hex,
  type KdfParams,
  type KeyInfo,
  type RepositoryKeys,
} from './crypto/keys.ts';
import { openSealed, seal, tryOpenSealed } from './crypto/seal.ts';
import { listIndexes, loadIndexes } from './index-file.ts';
import { Locker, type LockOptions } from './locks.ts';
import { pruneRepository, type PruneReport } from './prune.ts';
import type { RepositoryInternals } from './repository-internals.ts';
import { isNotFound, storageError } from './storage-error.ts';
import type { Tree } from './tree.ts';
import { parseTree, serializeTree } from './tree-blob.ts';
import {
  ManifestEnvelopeSchema,
  type BlobType,
  type Chunker,
  type ManifestEnvelope,
  type Repository,
  type RepositoryLock,
  type SaveBlobOptions,
  type SaveBlobResult,
  type SmallFileResult,
} from './repository-api.ts';

export interface OpenRepositoryOptions extends CallOptions {
  /** Target pack size in bytes (default 16 MiB). */
  packSize?: number;
  /** Worker threads compressing and sealing blobs (default: one per spare core, at most 2; 0 works on the calling thread). */
  workers?: number;
  /** Plaintext bytes being compressed and sealed at once before `saveBlob` waits (default 8 MiB). */
  maxPendingBytes?: number;
  /** scrypt cost for passwords added with `addPassword` (default N=2^15, r=8, p=1). */
  kdf?: KdfParams;
  /** Lock refresh and staleness (default 5 and 30 minutes). */
  lock?: LockOptions;
}

export interface InitRepositoryOptions extends OpenRepositoryOptions {
  /** Chunk sizes, fixed for the repository's life (default 256 KiB / 1 MiB / 4 MiB). */
  chunker?: ChunkerParams;
  /** zstd level for every blob (default 3). */
  compressionLevel?: number;
}

export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
/**
 * The calling thread chunks and hashes (about as much work as zstd and AES together), so one
 * worker per spare core, at most 2: on 2 cores one worker is as fast as two and holds less memory.
 */
export const DEFAULT_WORKERS = Math.min(2, Math.max(1, availableParallelism() - 1));
const CONFIG_NAME = 'config';
/** Parsed trees kept by `loadTree`: a few thousand directories' listings, some megabytes. */
const TREE_CACHE_SIZE = 2048;
/** `loadBlobs` reads blobs of one pack as one range across gaps up to this, and ranges up to GATHER_MAX. */
const GATHER_GAP = 64 * 1024;
const GATHER_MAX = 8 * 1024 * 1024;
/** Bytes of whole tree packs kept by `loadTreeBlob` (at least two full packs). */
const TREE_PACK_CACHE_BYTES = 64 * 1024 * 1024;

/**
 * Creates a repository on an empty backend and opens it: writes the first key (the master
 * secret sealed under `password`), then the config (last: a location with a config is a
 * repository). Refuses a backend that already has one.
 *
 * @example
 * const repo = await initRepository(new FsBackend('/var/backups/q'), password);
 */
export async function initRepository(
  backend: Backend,
  password: string,
  options: InitRepositoryOptions = {},
): Promise<Repository> {
  if (await backend.exists(options)) {
    throw new QuiesceError(
      'bad-usage',
      `there is already a repository at ${backend.location}: open it instead of running init`,
    );
  }
  const chunker = options.chunker ?? DEFAULT_CHUNKER_PARAMS;
  validateChunkerParams(chunker);
  const master = newMasterSecret();
  const keys = deriveKeys(master);
  const config: RepositoryConfig = {
    version: 1,
    id: randomBytes(32).toString('hex'),
    chunker: { minSize: chunker.minSize, avgSize: chunker.avgSize, maxSize: chunker.maxSize },
    compression: { algorithm: 'zstd', level: options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL },
  };
  let keyName: string;
  try {
    keyName = await addKey(backend, master, password, options.kdf ?? DEFAULT_KDF, options);
    await backend.save('config', CONFIG_NAME, encodeConfig(keys.encryption, config), options);
  } catch (error) {
    throw storageError(error, backend.location);
  }
  return QuiesceRepository.start(backend, master, keyName, config, options);
}

/**
 * Opens an existing repository with one of its passwords and loads its index.
 * Errors: `not-a-repository` (no or a foreign config), `unsupported-version`, `wrong-password`.
 *
 * @example
 * const repo = await openRepository(backend, password);
 * try { … } finally { await repo.close(); }
 */
export async function openRepository(
  backend: Backend,
  password: string,
  options: OpenRepositoryOptions = {},
): Promise<Repository> {
  const none = (cause?: unknown): QuiesceError =>
    new QuiesceError(
      'not-a-repository',
      `no quiesce repository at ${backend.location}: run quiesce init`,
      cause === undefined ? {} : { cause },
    );
  if (!(await backend.exists(options))) throw none();
  let configBytes: Buffer;
  try {
    configBytes = await backend.load('config', CONFIG_NAME, options);
  } catch (error) {
    if (isNotFound(error)) throw none(error);
    throw error;
  }
  checkConfigPrefix(configBytes, backend.location);
  const sealed = sealedConfig(configBytes);
  const { master, keyName } = await openMasterSecret(
    backend,
    password,
    (candidate) => tryOpenSealed(deriveKeys(candidate).encryption, sealed) !== null,
    options,
  );
  const config = decodeConfig(deriveKeys(master).encryption, configBytes, backend.location);
  return QuiesceRepository.start(backend, master, keyName, config, options);
}

class QuiesceRepository implements Repository, RepositoryInternals {
  readonly id: string;
  readonly keys: RepositoryKeys;
  readonly packSize: number;
  private readonly index = new BlobIndex();
  /** Whole packs of trees read lately, oldest first (see `loadTreeBlob`), and their total size. */
  private readonly treePacks = new Map<string, { bytes: Promise<Buffer>; size: number }>();
  private treePackBytes = 0;
  /** The index objects `index` was loaded from, null when it must be read again. */
  private indexNames: ReadonlySet<string> | null = null;
  /** Trees loaded lately, oldest first (see `loadTree`). */
  private readonly trees = new Map<string, Tree>();
  private readonly saver: BlobSaver;
  private readonly locker: Locker;
  private readonly gear: Uint32Array;
  private closed = false;

  private constructor(
    readonly backend: Backend,
    private readonly master: Buffer,
    /** The key file this session's password opened. */
    private readonly keyName: string,
    private readonly config: RepositoryConfig,
    private readonly options: OpenRepositoryOptions,
  ) {
    this.id = config.id;
    this.keys = deriveKeys(master);
    this.packSize = options.packSize ?? DEFAULT_PACK_SIZE;
    this.gear = gearTable(this.keys.chunkerSeed);
    this.saver = new BlobSaver(backend, this.keys, this.index, {
      packSize: this.packSize,
      compressionLevel: config.compression.level,
      workers: options.workers ?? DEFAULT_WORKERS,
      maxPendingBytes: options.maxPendingBytes ?? 8 * 1024 * 1024,
      maxUploads: 1,
      indexEveryPacks: 64,
    });
    this.locker = new Locker(backend, this.keys.encryption, options.lock);
  }

  static async start(
    backend: Backend,
    master: Buffer,
    keyName: string,
    config: RepositoryConfig,
    options: OpenRepositoryOptions,
  ): Promise<QuiesceRepository> {
    const repo = new QuiesceRepository(backend, master, keyName, config, options);
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
      this.saver.giveBack(plaintext);
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
      this.saver.recycle(batch);
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
        `blob ${id} is not in the repository at ${this.backend.location} (run quiesce check)`,
      );
    }
    // A blob a worker will open is read into memory that goes to the worker and comes back.
    const into = this.saver.readInto(location.length);
    return readBlob(
      this.backend,
      this.keys,
      id,
      location,
      into === undefined ? options : { ...options, into },
      (sealed, rawLength) => this.saver.openBlob(sealed, rawLength, id),
    );
  }

  releaseBlob(plaintext: Uint8Array): void {
    this.saver.releaseOpened(plaintext);
  }

  loadBlobs(ids: readonly string[], options: CallOptions = {}): Map<string, Promise<Buffer>> {
    this.assertOpen();
    const loads = new Map<string, Promise<Buffer>>();
    // Stored blobs by pack, in pack order; anything else is loaded on its own.
    const byPack = new Map<string, { id: string; offset: number; length: number; rawLength: number }[]>();
    for (const id of new Set(ids)) {
      const location = this.saver.has(id) ? undefined : this.index.get(id);
      if (location === undefined) {
        const loading = this.loadBlob(id, options);
        loading.catch(() => undefined); // the caller awaits it; never unhandled meanwhile
        loads.set(id, loading);
        continue;
      }
      const blobs = byPack.get(location.pack) ?? [];
      blobs.push({ id, offset: location.offset, length: location.length, rawLength: location.rawLength });
      byPack.set(location.pack, blobs);
    }
    for (const [pack, blobs] of byPack) {
      blobs.sort((a, b) => a.offset - b.offset);
      for (let first = 0; first < blobs.length;) {
        // A run of blobs read as one range: gaps of other blobs up to GATHER_GAP are read and dropped.
        let last = first;
        while (
          last + 1 < blobs.length &&
          blobs[last + 1]!.offset - (blobs[last]!.offset + blobs[last]!.length) <= GATHER_GAP &&
          blobs[last + 1]!.offset + blobs[last + 1]!.length - blobs[first]!.offset <= GATHER_MAX
        ) {
          last++;
        }
        const run = blobs.slice(first, last + 1);
        const start = run[0]!.offset;
        const end = run.at(-1)!.offset + run.at(-1)!.length;
        const bytes = loadPack(this.backend, pack, run[0]!.id, { offset: start, length: end - start }, options);
        for (const blob of run) {
          const opened = bytes.then((range) =>
            verifyBlob(
              this.keys,
              blob.id,
              range.subarray(blob.offset - start, blob.offset - start + blob.length),
              pack,
              blob.rawLength,
            ),
          );
          opened.catch(() => undefined); // the caller awaits it; never unhandled meanwhile
          loads.set(blob.id, opened);
        }
        first = last + 1;
      }
    }
    return loads;
  }

  async saveTree(tree: Tree, options: CallOptions = {}): Promise<SaveBlobResult> {
    return this.saveBlob('tree', serializeTree(tree), options);
  }

  async loadTree(id: string, options: CallOptions = {}): Promise<Tree> {
    // Trees are immutable and named by their content: one read serves every later walk of the
    // same tree (an incremental walks its parent's twice: for the snapshot, then for the archive).
    const cached = this.trees.get(id);
    if (cached !== undefined) return cached;
    const tree = parseTree(id, await this.loadTreeBlob(id, options));
    if (this.trees.size >= TREE_CACHE_SIZE) this.trees.delete(this.trees.keys().next().value!);
    this.trees.set(id, tree);
    return tree;
  }

  /**
   * A tree's plaintext. A tree in a pack of trees alone (see `BlobSaver`) is read with the whole
   * pack, which stays cached: a set's directories mostly share a few such packs, so walking a
   * set costs a few reads, not one per directory.
   */
  private async loadTreeBlob(id: string, options: CallOptions): Promise<Buffer> {
    this.assertOpen();
    await this.saver.settled(id);
    const location = this.index.get(id);
    const packSize = location === undefined || this.saver.has(id) ? undefined : this.index.treePackSize(location.pack);
    if (location === undefined || packSize === undefined || packSize > 2 * this.packSize)
      return this.loadBlob(id, options);
    let pack = this.treePacks.get(location.pack);
    if (pack === undefined) {
      const entry = { bytes: loadPack(this.backend, location.pack, id, null, options), size: packSize };
      pack = entry;
      // A failed read is not kept: a retry reads again.
      entry.bytes.catch(() => this.forgetTreePack(location.pack, entry));
      this.treePacks.set(location.pack, entry);
      this.treePackBytes += packSize;
      for (const [name, kept] of this.treePacks) {
        if (this.treePackBytes <= TREE_PACK_CACHE_BYTES || kept === entry) break;
        this.forgetTreePack(name, kept);
      }
    }
    const bytes = await pack.bytes;
    if (location.offset + location.length > bytes.length) {
      throw new QuiesceError(
        'damaged',
        `pack ${location.pack}, which holds blob ${id}, is shorter than the index says (run quiesce check)`,
      );
    }
    return verifyBlob(
      this.keys,
      id,
      bytes.subarray(location.offset, location.offset + location.length),
      location.pack,
      location.rawLength,
    );
  }

  private forgetTreePack(name: string, entry: { size: number }): void {
    if (this.treePacks.get(name) !== entry) return;
    this.treePacks.delete(name);
    this.treePackBytes -= entry.size;
  }

  async flush(options: CallOptions = {}): Promise<void> {
    this.assertOpen();
    await this.saver.flush(options);
  }

  async saveManifest(manifest: ManifestEnvelope, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    const envelope = ManifestEnvelopeSchema.parse(manifest);
    if (!this.hasBlob(envelope.tree)) {
      throw new QuiesceError(
        'nonretryable',
        `the manifest of set ${envelope.setId} names tree ${envelope.tree}, which is not in the repository: save the tree first`,
      );
    }
    await this.flush(options);
    const bytes = seal(this.keys.encryption, Buffer.from(JSON.stringify(envelope), 'utf8'));
    const name = sha256Hex(bytes);
    try {
      await this.backend.save('manifests', name, bytes, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
    return name;
  }

  async loadManifest(id: string, options: CallOptions = {}): Promise<ManifestEnvelope> {
    let bytes: Buffer;
    try {
      bytes = await this.backend.load('manifests', id, options);
    } catch (error) {
      if (isNotFound(error))
        throw new QuiesceError(
          'bad-usage',
          `there is no manifest ${id} in the repository at ${this.backend.location}`,
          { cause: error },
        );
      throw error;
    }
    const what = `manifest ${id}`;
    if (sha256Hex(bytes) !== id)
      throw new QuiesceError('damaged', `${what} is damaged: its content does not match its name`);
    const plain = openSealed(this.keys.encryption, bytes, what);
    let parsed;
    try {
      parsed = ManifestEnvelopeSchema.safeParse(JSON.parse(plain.toString('utf8')));
    } catch (error) {
      throw new QuiesceError('damaged', `${what} is damaged: it is not JSON`, { cause: error });
    }
    if (!parsed.success)
      throw new QuiesceError(
        'damaged',
        `${what} is not a valid manifest: ${parsed.error.issues[0]?.message ?? 'invalid'}`,
      );
    return parsed.data;
  }

  async listManifests(options: CallOptions = {}): Promise<string[]> {
    const names: string[] = [];
    for await (const info of this.backend.list('manifests', options)) names.push(info.name);
    return names.sort();
  }

  async removeManifest(id: string, options: CallOptions = {}): Promise<void> {
    await this.backend.remove('manifests', id, options);
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

  async check(
    options: CallOptions & { readData?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<CheckReport> {
    this.assertOpen();
    return checkRepository(this, options);
  }

  async prune(options: CallOptions & { graceMs?: number; dryRun?: boolean } = {}): Promise<PruneReport> {
    this.assertOpen();
    return pruneRepository(this, options);
  }

  async addPassword(password: string, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    try {
      return await addKey(this.backend, this.master, password, this.options.kdf ?? DEFAULT_KDF, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
  }

  async listKeys(options: CallOptions = {}): Promise<(KeyInfo & { current: boolean })[]> {
    this.assertOpen();
    try {
      return (await listKeyFiles(this.backend, options)).map((key) => ({ ...key, current: key.id === this.keyName }));
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
  }

  async removeKey(id: string, options: CallOptions = {}): Promise<string> {
    this.assertOpen();
    const keys = await this.listKeys(options);
    // Another session may have removed this session's key meanwhile: then removing any other
    // could leave none that opens.
    if (!keys.some((key) => key.current)) {
      throw new QuiesceError(
        'bad-usage',
        `the key this password opened is no longer in the repository at ${this.backend.location}; no key is removed`,
      );
    }
    const matches = id.length >= 8 ? keys.filter((key) => key.id.startsWith(id)) : keys.filter((key) => key.id === id);
    if (matches.length === 0)
      throw new QuiesceError(
        'bad-usage',
        `the repository at ${this.backend.location} has no key ${id} (quiesce key list shows them)`,
      );
    if (matches.length > 1)
      throw new QuiesceError('bad-usage', `${id} names ${matches.length} keys; give more of the id`);
    const key = matches[0]!;
    // The key this session opened with always stays, so the repository always keeps a key that opens.
    if (key.current) {
      throw new QuiesceError(
        'bad-usage',
        `key ${key.id.slice(0, 12)} is the one this password opens: to remove it, give another password (--password-file) whose key stays`,
      );
    }
    try {
      await this.backend.remove('keys', key.id, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
    return key.id;
  }

  /** Stops the worker threads. Unflushed blobs are dropped (flush first); the backend stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.saver.close();
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
    const { files } = await loadIndexes(this.backend, this.keys.encryption, names, options);
    this.index.clear();
    for (const { file } of files) for (const pack of file.packs) this.index.addPack(pack);
    for (const pack of this.saver.sessionPacks) this.index.addPack(pack);
    this.indexNames = new Set(names);
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

  private assertOpen(): void {
    if (this.closed) throw new QuiesceError('bad-usage', 'the repository is closed');
  }
}
