import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import type { BlobIndex } from './blob-index.ts';
import { loadPack, verifyBlob } from './blob-reader.ts';
import type { BlobSaver } from './blob-saver.ts';
import type { RepositoryKeys } from './crypto/keys.ts';
import type { Tree } from './tree.ts';
import { parseTree } from './tree-blob.ts';

/** Parsed trees kept by `loadTree`: a few thousand directories' listings, some megabytes. */
const TREE_CACHE_SIZE = 2048;
/** Bytes of whole tree packs kept by `loadTreeBlob` (at least two full packs). */
const TREE_PACK_CACHE_BYTES = 64 * 1024 * 1024;

/** What the tree cache reads through: the repository's index, its saver and its blob reader. */
export interface TreeSource {
  readonly backend: Backend;
  readonly keys: RepositoryKeys;
  readonly index: BlobIndex;
  readonly saver: BlobSaver;
  readonly packSize: number;
  assertOpen(): void;
  loadBlob(id: string, options: CallOptions): Promise<Buffer>;
}

/**
 * Trees, parsed and kept, and the whole packs of trees they were read from. Trees are immutable
 * and named by their content: one read serves every later walk of the same tree (an incremental
 * walks its parent's twice: for the snapshot, then for the archive).
 */
export class TreeCache {
  /** Trees loaded lately, oldest first. */
  private readonly trees = new Map<string, Tree>();
  /** Whole packs of trees read lately, oldest first (see `loadTreeBlob`), and their total size. */
  private readonly treePacks = new Map<string, { bytes: Promise<Buffer>; size: number }>();
  private treePackBytes = 0;

  constructor(private readonly source: TreeSource) {}

  async loadTree(id: string, options: CallOptions = {}): Promise<Tree> {
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
    const { index, saver } = this.source;
    this.source.assertOpen();
    await saver.settled(id);
    const location = index.get(id);
    const packSize = location === undefined || saver.has(id) ? undefined : index.treePackSize(location.pack);
    if (location === undefined || packSize === undefined || packSize > 2 * this.source.packSize)
      return this.source.loadBlob(id, options);
    const bytes = await this.treePack(location.pack, packSize, id, options);
    if (location.offset + location.length > bytes.length) {
      throw new QuiesceError(
        'damaged',
        `pack ${location.pack}, which holds blob ${id}, is shorter than the index says (run quiesce check)`,
      );
    }
    return verifyBlob(
      this.source.keys,
      id,
      bytes.subarray(location.offset, location.offset + location.length),
      location.pack,
      location.rawLength,
    );
  }

  /** A whole pack of trees, read once and kept while the cache has room (oldest packs go first). */
  private treePack(name: string, size: number, id: string, options: CallOptions): Promise<Buffer> {
    const kept = this.treePacks.get(name);
    if (kept !== undefined) return kept.bytes;
    const entry = { bytes: loadPack(this.source.backend, name, id, null, options), size };
    // A failed read is not kept: a retry reads again.
    entry.bytes.catch(() => this.forgetTreePack(name, entry));
    this.treePacks.set(name, entry);
    this.treePackBytes += size;
    for (const [other, old] of this.treePacks) {
      if (this.treePackBytes <= TREE_PACK_CACHE_BYTES || old === entry) break;
      this.forgetTreePack(other, old);
    }
    return entry.bytes;
  }

  private forgetTreePack(name: string, entry: { size: number }): void {
    if (this.treePacks.get(name) !== entry) return;
    this.treePacks.delete(name);
    this.treePackBytes -= entry.size;
  }
}
