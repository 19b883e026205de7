import { z } from 'zod';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { isNotFound } from './storage-error.ts';
import { messageOf } from '../util/index.ts';
import { sha256Hex } from './crypto/keys.ts';
import { openSealed, seal } from './crypto/seal.ts';
import { isPlainIndex } from './plain-shape-guards.ts';
import { HEX64, PackedBlobSchema } from './pack-file.ts';

/**
 * An index object names packs and the blobs in each: `seal(JSON)`, named by the SHA-256 of its
 * stored bytes. A repository has any number of them; together they map every stored blob to its
 * pack. An index is written only after every pack it names is stored.
 */
export const IndexedPackSchema = z.object({
  id: z.string().regex(HEX64),
  /** The pack's size in bytes (check compares it with the stored object). */
  size: z.number().int().positive(),
  blobs: z.array(PackedBlobSchema),
  /**
   * When a prune first found every blob of this pack unused (ISO time). The pack is deleted by a
   * later prune once that is older than the grace period; a backup that reuses one of its blobs
   * before then brings it back to life (the next prune clears the mark).
   */
  unusedSince: z.string().optional(),
});
export type IndexedPack = z.infer<typeof IndexedPackSchema>;

export const IndexFileSchema = z.object({
  version: z.literal(1),
  packs: z.array(IndexedPackSchema),
});
export type IndexFile = z.infer<typeof IndexFileSchema>;

export function encodeIndex(key: Uint8Array, packs: IndexedPack[]): { name: string; bytes: Buffer } {
  const file: IndexFile = { version: 1, packs };
  const bytes = seal(key, Buffer.from(JSON.stringify(file), 'utf8'));
  return { name: sha256Hex(bytes), bytes };
}

export function decodeIndex(key: Uint8Array, bytes: Uint8Array, name: string): IndexFile {
  const plain = openSealed(key, bytes, `index ${name}`);
  try {
    const raw: unknown = JSON.parse(plain.toString('utf8'));
    return isPlainIndex(raw) ? raw : IndexFileSchema.parse(raw);
  } catch (error) {
    throw new QuiesceError('damaged', `index ${name} is damaged: it is not a valid index`, { cause: error });
  }
}

export interface LoadedIndexes {
  files: { name: string; file: IndexFile }[];
  /** Index objects that could not be read or opened, with the reason. */
  damaged: { name: string; message: string }[];
}

/** The names of the index objects stored now. */
export async function listIndexes(backend: Backend, options: CallOptions = {}): Promise<string[]> {
  const names: string[] = [];
  for await (const info of backend.list('index', options)) names.push(info.name);
  return names;
}

/** Reads every index object (a few at a time); damaged ones are listed, not thrown. */
export async function loadAllIndexes(
  backend: Backend,
  key: Uint8Array,
  options: CallOptions = {},
): Promise<LoadedIndexes> {
  return loadIndexes(backend, key, await listIndexes(backend, options), options);
}

/** Reads the index objects named (a few at a time); damaged ones are listed, not thrown, and vanished ones skipped. */
export async function loadIndexes(
  backend: Backend,
  key: Uint8Array,
  names: readonly string[],
  options: CallOptions = {},
): Promise<LoadedIndexes> {
  const result: LoadedIndexes = { files: [], damaged: [] };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const name = names[next++]!;
      let bytes: Buffer;
      try {
        bytes = await backend.load('index', name, options);
      } catch (error) {
        if (isNotFound(error)) continue; // removed by a prune since the listing
        throw error;
      }
      // An index object is named by the SHA-256 of its bytes: one that no longer hashes to its
      // name was changed (or replaced by another) after it was written.
      if (sha256Hex(bytes) !== name) {
        result.damaged.push({
          name,
          message: `index ${name} is damaged: its bytes no longer match its name (SHA-256)`,
        });
        continue;
      }
      try {
        result.files.push({ name, file: decodeIndex(key, bytes, name) });
      } catch (error) {
        result.damaged.push({ name, message: messageOf(error) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, names.length) }, worker));
  return result;
}
