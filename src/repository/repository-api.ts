import { z } from 'zod';
import type { CallOptions } from '../model/index.ts';
import type { CheckOptions, CheckReport } from './check.ts';
import type { PruneOptions, PruneReport } from './prune.ts';
import type { RepairIndexReport, RepairPacksReport } from './repair.ts';
import type { Tree } from './tree.ts';

export type BlobType = 'data' | 'tree';

export type SmallFileResult = SaveBlobResult | { error: string; code: string | null };

export interface SaveBlobOptions extends CallOptions {
  /**
   * The content is most likely not stored yet (a file the parent set did not have): it is sealed
   * and named on a worker, and dropped after if its id turns out known. Without it, the blob is
   * named first and only a new one is sealed, the cheaper way for content that is mostly stored.
   */
  likelyNew?: boolean;
}

export interface SaveBlobResult {
  /** Keyed SHA-256 of the plaintext, hex. */
  id: string;
  /** False when the repository already had it (deduplicated). */
  added: boolean;
  /** Bytes this call added to the repository (compressed + sealed), 0 when deduplicated. */
  storedBytes: number;
}

/**
 * The envelope of every manifest: the repository needs the root tree to know what a manifest
 * keeps alive; everything else (`meta`) belongs to the layer above and is opaque here.
 */
export const ManifestEnvelopeSchema = z.object({
  version: z.literal(1),
  /** The backup set id (also the manifest's object name is its content hash). */
  setId: z.string().min(1).max(128),
  time: z.string(),
  tree: z.string().regex(/^[0-9a-f]{64}$/),
  meta: z.unknown(),
});
export type ManifestEnvelope = z.infer<typeof ManifestEnvelopeSchema>;

export interface RepositoryLock extends AsyncDisposable {
  release(): Promise<void>;
}

/**
 * A content-addressed, deduplicating, encrypted store of blobs, trees and manifests.
 * It knows nothing of writers: it stores trees of files and their content.
 *
 * Contract:
 * - `saveBlob` deduplicates by id against the index and the blobs pending in this session.
 * - Nothing saved is visible to other processes until `flush` has written its packs and then
 *   the index that names them (packs first, index second: a crash leaves unreferenced packs,
 *   never an index naming a missing pack).
 * - `saveManifest` flushes first, so a manifest only ever names data that is stored.
 * - `loadBlob` verifies the blob's id against its plaintext: damage is `damaged`, never wrong data.
 * - Every method honours `signal`; a cancelled call never leaves a torn object (see Backend).
 */
export interface Repository {
  readonly id: string;
  /**
   * Content-defined chunk boundaries for this repository (keyed: boundaries reveal nothing);
   * `allocate` gives each chunk its buffer (exactly `length` bytes), for callers that recycle them.
   */
  createChunker(allocate?: (length: number) => Uint8Array): Chunker;
  blobId(plaintext: Uint8Array): string;
  hasBlob(id: string): boolean;
  /**
   * A chunk from a chunker made with the default allocator is consumed: it moves to an encoding
   * worker, or back to the pool it came from; never read it after this call. Any other
   * plaintext is copied and stays the caller's.
   */
  saveBlob(type: BlobType, plaintext: Uint8Array, options?: SaveBlobOptions): Promise<SaveBlobResult>;
  /**
   * Stores whole small files as data blobs, each no longer than the chunker's minimum size (so
   * one chunk: the blob `saveBlob` would store for it). They are read, named and sealed on the
   * encoding workers, many to a message. Answers per file, in order, its blob or why it could
   * not be read (`code` CHANGED: not the listed size).
   */
  saveSmallFiles(files: { path: string | Buffer; size: number }[], options?: CallOptions): Promise<SmallFileResult[]>;
  loadBlob(id: string, options?: CallOptions): Promise<Buffer>;
  /**
   * A blob from `loadBlob` that the caller is done with, and will not touch again: its memory may
   * hold the next blobs opened (a restore writes gigabytes, and fresh memory costs a page fault
   * per page). Blobs of other origins are ignored.
   */
  releaseBlob(plaintext: Uint8Array): void;
  /**
   * Many blobs at once, each verified as `loadBlob` does (a damaged one fails alone): blobs that
   * lie close together in a pack (a directory's small files, as a backup packs them) are read
   * with one ranged load.
   */
  loadBlobs(ids: readonly string[], options?: CallOptions): Map<string, Promise<Buffer>>;
  saveTree(tree: Tree, options?: CallOptions): Promise<SaveBlobResult>;
  /** A tree, shared with later callers (trees are immutable): never modify it. */
  loadTree(id: string, options?: CallOptions): Promise<Tree>;
  flush(options?: CallOptions): Promise<void>;
  saveManifest(manifest: ManifestEnvelope, options?: CallOptions): Promise<string>;
  loadManifest(id: string, options?: CallOptions): Promise<ManifestEnvelope>;
  listManifests(options?: CallOptions): Promise<string[]>;
  removeManifest(id: string, options?: CallOptions): Promise<void>;
  /** Shared for backup and restore, exclusive for prune; stale locks (dead process on this host, or older than 30 min without refresh) are ignored. */
  lock(kind: 'shared' | 'exclusive', options?: CallOptions): Promise<RepositoryLock>;
  check(options?: CheckOptions): Promise<CheckReport>;
  prune(options?: PruneOptions): Promise<PruneReport>;
  /** Rebuilds the index from the packs' headers, replacing every index object (see repair.ts). */
  repairIndex(options?: CallOptions): Promise<RepairIndexReport>;
  /** Reads every blob; copies the sound blobs of damaged packs, drops the rest from the index (see repair.ts). */
  repairPacks(options?: CallOptions): Promise<RepairPacksReport>;
  /** Seals the master key under another password, in a key file of its own; answers its id. */
  addPassword(password: string, options?: CallOptions): Promise<string>;
  /** Every key file, and which one this session's password opened (`current`). */
  listKeys(
    options?: CallOptions,
  ): Promise<{ id: string; created: string | null; hostname: string | null; current: boolean }[]>;
  /**
   * Removes a key file, named by its id or a unique prefix of 8 or more characters; answers its
   * full id. The key this session opened with is refused, so a key that opens always remains.
   */
  removeKey(id: string, options?: CallOptions): Promise<string>;
  close(): Promise<void>;
}

// The narrow views of a repository its consumers take (restic's `archiverRepo`): exactly the
// members each one uses, so a test double implements only those, and a reader sees what a
// consumer can do to the repository.

/** What a backup's archiver uses: it chunks, names, deduplicates and saves blobs and trees. */
export type ArchiverRepository = Pick<
  Repository,
  'createChunker' | 'hasBlob' | 'loadTree' | 'saveBlob' | 'saveSmallFiles' | 'saveTree'
>;
/** What a restore uses: it reads trees and blobs, and gives blobs' memory back once written. */
export type RestorerRepository = Pick<Repository, 'loadBlob' | 'loadBlobs' | 'loadTree' | 'releaseBlob'>;
/** What the catalog uses: the repository's id (its cache key) and its manifests. */
export type CatalogRepository = Pick<Repository, 'id' | 'listManifests' | 'loadManifest'>;

/** Streaming content-defined chunker: feed bytes, get complete chunks; `finish` gives the rest. */
export interface Chunker {
  /** A stream no longer than this is always one chunk: a caller may store it without chunking it. */
  readonly minSize?: number;
  update(data: Uint8Array): Uint8Array[];
  finish(): Uint8Array[];
  /** Forgets the stream so far (after `finish`, or after a failed one): ready for the next stream. */
  reset(): void;
}
