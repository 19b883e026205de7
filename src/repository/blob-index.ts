import type { BlobType } from './repository-api.ts';
import type { IndexedPack, IndexFile } from './index-file.ts';

export interface BlobLocation {
  pack: string;
  type: BlobType;
  offset: number;
  length: number;
  rawLength: number;
}

/**
 * The in-memory map of every stored blob to its place in a pack, built from the index objects
 * (and from this session's packs as they are stored). When a blob is stored twice (two
 * sessions saved it concurrently), the first location seen wins; both are valid.
 */
export class BlobIndex {
  private readonly blobs = new Map<string, BlobLocation>();
  private readonly packSizes = new Map<string, number>();
  /** Packs that hold trees and nothing else (see `BlobSaver`: trees are packed apart from data). */
  private readonly treePacks = new Set<string>();

  addPack(pack: IndexedPack): void {
    this.packSizes.set(pack.id, pack.size);
    if (pack.blobs.length > 0 && pack.blobs.every((b) => b.type === 'tree')) this.treePacks.add(pack.id);
    for (const blob of pack.blobs) {
      if (this.blobs.has(blob.id)) continue;
      this.blobs.set(blob.id, {
        pack: pack.id,
        type: blob.type,
        offset: blob.offset,
        length: blob.length,
        rawLength: blob.rawLength,
      });
    }
  }

  get(id: string): BlobLocation | undefined {
    return this.blobs.get(id);
  }

  /** The size of a pack that holds only trees, else undefined. */
  treePackSize(pack: string): number | undefined {
    return this.treePacks.has(pack) ? this.packSizes.get(pack) : undefined;
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  get blobCount(): number {
    return this.blobs.size;
  }

  get packCount(): number {
    return this.packSizes.size;
  }

  clear(): void {
    this.blobs.clear();
    this.packSizes.clear();
    this.treePacks.clear();
  }
}

/** The packs the index objects name (first mention wins) and the blob index built from them. */
export function indexPacks(files: readonly { file: IndexFile }[]): {
  packs: Map<string, IndexedPack>;
  index: BlobIndex;
} {
  const packs = new Map<string, IndexedPack>();
  const index = new BlobIndex();
  for (const { file } of files) {
    for (const pack of file.packs) {
      if (!packs.has(pack.id)) packs.set(pack.id, pack);
      index.addPack(pack);
    }
  }
  return { packs, index };
}
