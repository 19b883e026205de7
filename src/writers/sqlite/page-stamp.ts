/**
 * The SQLite writer's backup stamp: a summary of a database file as one backup stored it, made of
 * one truncated SHA-256 per fixed-size block. Comparing a file with an earlier stamp gives the byte
 * ranges that changed since, which is what an incremental or differential backup reads.
 *
 * Wire format (the stamp is opaque to everyone else):
 *
 * ```json
 * { "v": 1, "id": "6f1c…", "size": 20971520, "pageSize": 4096, "blockSize": 65536, "hashes": "base64…" }
 * ```
 *
 * `hashes` is the base64 of the concatenated first 16 bytes of SHA-256 of every block, in file
 * order; the last block may be short. A block is a whole number of database pages.
 */
import { createHash, randomUUID } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { z } from 'zod';
import { QuiesceError, type ByteRange } from '../../model/index.ts';

export const STAMP_VERSION = 1;
export const HASH_BYTES = 16;
/** The smallest block: large enough that a stamp stays small, small enough that a changed row costs little. */
export const MIN_BLOCK_SIZE = 64 * 1024;
/** Keeps a stamp (base64, 16 bytes per block) under 3 MB, well inside the wire's 4 MiB stamp limit. */
export const MAX_BLOCKS = 128 * 1024;
const DEFAULT_PAGE_SIZE = 4096;
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

const StampJsonSchema = z.object({
  v: z.literal(STAMP_VERSION),
  id: z.string().min(1).max(128),
  size: z.number().int().nonnegative(),
  pageSize: z.number().int().min(512).max(65536),
  blockSize: z.number().int().positive(),
  hashes: z.string(),
});

export interface PageStamp {
  v: typeof STAMP_VERSION;
  id: string;
  size: number;
  pageSize: number;
  blockSize: number;
  /** HASH_BYTES per block, in file order. */
  hashes: Buffer;
}

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** The stamp as the opaque string handed to the requester. */
export function encodeStamp(stamp: PageStamp): string {
  return JSON.stringify({
    v: stamp.v,
    id: stamp.id,
    size: stamp.size,
    pageSize: stamp.pageSize,
    blockSize: stamp.blockSize,
    hashes: stamp.hashes.toString('base64'),
  });
}

/** Parses a stamp string; throws a plain Error saying what is wrong (the caller decides what it means). */
export function decodeStamp(text: string): PageStamp {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error('the stamp is not JSON');
  }
  const parsed = StampJsonSchema.safeParse(json);
  if (!parsed.success) throw new Error(`the stamp is not a quiesce.sqlite v${STAMP_VERSION} stamp`);
  const { blockSize, pageSize, size } = parsed.data;
  if (blockSize % pageSize !== 0) throw new Error('the stamp block size is not a multiple of its page size');
  const hashes = Buffer.from(parsed.data.hashes, 'base64');
  if (hashes.length !== blockCount(size, blockSize) * HASH_BYTES) {
    throw new Error('the stamp has the wrong number of block hashes for its size');
  }
  return { ...parsed.data, v: STAMP_VERSION, hashes };
}

/**
 * The page size from a SQLite file's header (bytes 16–17, big-endian; 1 means 65536).
 * An empty file (a database never written) counts as the default 4096.
 */
export async function readPageSize(path: string): Promise<number> {
  const handle = await open(path, 'r');
  try {
    const header = Buffer.alloc(100);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    if (bytesRead === 0) return DEFAULT_PAGE_SIZE;
    if (bytesRead < header.length || !header.subarray(0, SQLITE_MAGIC.length).equals(SQLITE_MAGIC)) {
      throw new QuiesceError(
        'nonretryable',
        `${path} is not a SQLite database (bad header); check the writer's path in the config`,
      );
    }
    const raw = header.readUInt16BE(16);
    return raw === 1 ? 65536 : raw;
  } finally {
    await handle.close();
  }
}

/**
 * The block size for a file: the previous stamp's when it still fits (so the stamps compare),
 * otherwise max(pageSize, 64 KiB), doubled until the file has at most MAX_BLOCKS blocks.
 * Page sizes are powers of two up to 64 KiB, so every such block is a whole number of pages.
 */
export function chooseBlockSize(
  pageSize: number,
  size: number,
  previous?: Pick<PageStamp, 'pageSize' | 'blockSize'>,
): number {
  if (previous && previous.pageSize === pageSize && blockCount(size, previous.blockSize) <= MAX_BLOCKS) {
    return previous.blockSize;
  }
  let blockSize = Math.max(pageSize, MIN_BLOCK_SIZE);
  while (blockCount(size, blockSize) > MAX_BLOCKS) blockSize *= 2;
  return blockSize;
}

/**
 * Hashes a file block by block with asynchronous reads, so the event loop keeps running (the
 * writer's process also serves its watchdog and other sets' calls). Honours `signal` between reads.
 */
export async function hashBlocks(
  path: string,
  blockSize: number,
  options: { signal?: AbortSignal } = {},
): Promise<{ size: number; hashes: Buffer }> {
  const handle = await open(path, 'r');
  try {
    const blocksPerRead = Math.max(1, Math.floor((1024 * 1024) / blockSize));
    const buffer = Buffer.allocUnsafe(blockSize * blocksPerRead);
    const hashes: Buffer[] = [];
    let position = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      // Fill the buffer completely (a short read is not EOF for every file system).
      let filled = 0;
      while (filled < buffer.length) {
        const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, position + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      for (let offset = 0; offset < filled; offset += blockSize) {
        const block = buffer.subarray(offset, Math.min(offset + blockSize, filled));
        hashes.push(createHash('sha256').update(block).digest().subarray(0, HASH_BYTES));
      }
      position += filled;
      if (filled < buffer.length) break;
    }
    return { size: position, hashes: Buffer.concat(hashes) };
  } finally {
    await handle.close();
  }
}

/** Stamps a database file (normally the snapshot's copy of it). */
export async function stampFile(
  path: string,
  options: { previous?: PageStamp; signal?: AbortSignal } = {},
): Promise<PageStamp> {
  const pageSize = await readPageSize(path);
  const { size: sizeNow } = await stat(path);
  const blockSize = chooseBlockSize(pageSize, sizeNow, options.previous);
  const { size, hashes } = await hashBlocks(path, blockSize, options);
  return { v: STAMP_VERSION, id: randomUUID(), size, pageSize, blockSize, hashes };
}

/** Can `next` be compared block by block with `previous`? */
export function comparable(previous: PageStamp, next: PageStamp): boolean {
  return previous.pageSize === next.pageSize && previous.blockSize === next.blockSize;
}

/**
 * The byte ranges of `next`'s file whose blocks differ from `previous` (or did not exist in it),
 * adjacent blocks merged. A file that shrank is described by its new size; nothing is listed for
 * the cut-off tail. The stamps must be `comparable`.
 */
export function changedRanges(previous: PageStamp, next: PageStamp): ByteRange[] {
  if (!comparable(previous, next)) throw new Error('the stamps have different page or block sizes');
  const { blockSize, size } = next;
  const oldCount = blockCount(previous.size, blockSize);
  const newCount = blockCount(size, blockSize);
  const ranges: ByteRange[] = [];
  for (let index = 0; index < newCount; index++) {
    const at = index * HASH_BYTES;
    // A short last block hashes its own bytes only, so a block that grew or shrank differs too.
    const same =
      index < oldCount && next.hashes.compare(previous.hashes, at, at + HASH_BYTES, at, at + HASH_BYTES) === 0;
    if (same) continue;
    const offset = index * blockSize;
    const length = Math.min(blockSize, size - offset);
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else ranges.push({ offset, length });
  }
  return ranges;
}
