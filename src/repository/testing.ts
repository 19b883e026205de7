// Small repositories for the repository's own tests (restic's testing.go): deterministic data, a
// two-set fixture with a shared subdirectory, ways to find and damage a stored blob, error checks.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { QuiesceError } from '../model/index.ts';
import type { MemoryBackend } from './backend/memory-backend.ts';
import { loadAllIndexes } from './index-file.ts';
import type { InitRepositoryOptions } from './open.ts';
import type { Repository } from './repository-api.ts';
import type { FileNode, Tree } from './tree.ts';

export const PASSWORD = 'open sesame';

/** Cheap scrypt, 2–32 KiB chunks, 64 KiB packs, no worker threads. */
export const SMALL: InitRepositoryOptions = {
  kdf: { N: 1024, r: 8, p: 1 },
  chunker: { minSize: 2048, avgSize: 8192, maxSize: 32768 },
  packSize: 64 * 1024,
  workers: 0,
};

/** Deterministic incompressible bytes. */
export function pseudoRandom(length: number, salt = 'data'): Buffer {
  const out = Buffer.alloc(length);
  let counter = 0;
  for (let at = 0; at < length; at += 32) createHash('sha256').update(`${salt}:${counter++}`).digest().copy(out, at);
  return out;
}

/** An `assert.rejects` check: a QuiesceError with this code (and this text in its message). */
export function isCode(code: string, includes?: string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof QuiesceError, `expected a QuiesceError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (includes !== undefined) assert.ok(error.message.includes(includes), error.message);
    return true;
  };
}

/** Chunks and stores `data` as a file node. */
export async function storeFile(repo: Repository, name: string, data: Buffer): Promise<FileNode> {
  const chunker = repo.createChunker();
  const content = [];
  for (const chunk of [...chunker.update(data), ...chunker.finish()])
    content.push({ id: (await repo.saveBlob('data', chunk)).id, length: chunk.length });
  return { name, type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', size: data.length, content };
}

export interface TwoSets {
  manifests: [string, string];
  /** Data blob ids of each file: a (set-1), b (both, under sub/), c (set-2). */
  blobsOf: { a: string[]; b: string[]; c: string[] };
}

/** set-1 holds /a.bin and /sub/b.bin; set-2 holds /c.bin and the same /sub. */
export async function storeTwoSets(repo: Repository, salt = ''): Promise<TwoSets> {
  const a = await storeFile(repo, 'a.bin', pseudoRandom(100_000, `a${salt}`));
  const b = await storeFile(repo, 'b.bin', pseudoRandom(50_000, `b${salt}`));
  const c = await storeFile(repo, 'c.bin', pseudoRandom(30_000, `c${salt}`));
  const sub = await repo.saveTree({ nodes: [b] });
  const dir = { name: 'sub', type: 'dir' as const, mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', subtree: sub.id };
  const root1: Tree = { nodes: [a, dir] };
  const root2: Tree = { nodes: [c, dir] };
  const m1 = await repo.saveManifest({
    version: 1,
    setId: 'set-1',
    time: 't1',
    tree: (await repo.saveTree(root1)).id,
    meta: null,
  });
  const m2 = await repo.saveManifest({
    version: 1,
    setId: 'set-2',
    time: 't2',
    tree: (await repo.saveTree(root2)).id,
    meta: null,
  });
  const ids = (f: FileNode): string[] => f.content.map((x) => x.id);
  return { manifests: [m1, m2], blobsOf: { a: ids(a), b: ids(b), c: ids(c) } };
}

/** Where the index says a blob is stored. */
export async function locate(
  backend: MemoryBackend,
  repo: Repository,
  id: string,
): Promise<{ pack: string; offset: number; length: number }> {
  const { keys } = repo as unknown as { keys: { encryption: Buffer } };
  const { files } = await loadAllIndexes(backend, keys.encryption);
  for (const { file } of files) {
    for (const pack of file.packs)
      for (const blob of pack.blobs)
        if (blob.id === id) return { pack: pack.id, offset: blob.offset, length: blob.length };
  }
  throw new Error(`blob ${id} is in no index`);
}

/** Flips one bit in the middle of a blob's stored bytes; answers its pack. */
export async function flipBlob(backend: MemoryBackend, repo: Repository, id: string): Promise<string> {
  const where = await locate(backend, repo, id);
  const bytes = Buffer.from(backend.get('data', where.pack));
  bytes[where.offset + Math.floor(where.length / 2)]! ^= 0x01;
  backend.put('data', where.pack, bytes);
  return where.pack;
}
