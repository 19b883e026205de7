import { z } from 'zod';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import { awaitedLater } from '../util/index.ts';
import { createHash } from 'node:crypto';
import type { Backend, ObjectWriter } from './backend/backend.ts';
import { alignedBuffer } from './backend/direct-io.ts';
import { sha256Hex } from './crypto/keys.ts';
import { openSealed, seal } from './crypto/seal.ts';
import type { SealedParts } from './blob-codec.ts';

/**
 * A pack file gathers sealed blobs:
 *
 *   sealed blob 0 || sealed blob 1 || … || seal(header JSON) || u32le(length of the sealed header)
 *
 * Its object name is the SHA-256 of all its bytes. The header lists every blob (so the index
 * can be rebuilt from the packs alone) and the time the pack was written (prune's grace period
 * for packs no index names).
 */

export const HEX64 = /^[0-9a-f]{64}$/;

export const PackedBlobSchema = z.object({
  id: z.string().regex(HEX64),
  type: z.enum(['data', 'tree']),
  /** Where its sealed bytes start in the pack, and how many there are. */
  offset: z.number().int().nonnegative(),
  length: z.number().int().positive(),
  /** Its plaintext length. */
  rawLength: z.number().int().nonnegative(),
});
export type PackedBlob = z.infer<typeof PackedBlobSchema>;

export const PackHeaderSchema = z.object({
  version: z.literal(1),
  /** When the pack was written (ISO 8601, the writer's clock). */
  created: z.string(),
  blobs: z.array(PackedBlobSchema),
});
export type PackHeader = z.infer<typeof PackHeaderSchema>;

/** Largest sealed header we accept when reading one back (a pack holds at most a few thousand blobs). */
const MAX_HEADER = 16 * 1024 * 1024;

export interface BuiltPack {
  name: string;
  bytes: Buffer;
  header: PackHeader;
}

/** A sealed blob's pieces, in the order they are stored. */
function piecesOf(sealed: SealedParts | Uint8Array): Uint8Array[] {
  return sealed instanceof Uint8Array ? [sealed] : [sealed.head, sealed.body, sealed.tag];
}

/** What ends a pack: its sealed header and that header's length (u32le). */
function packTail(key: Uint8Array, blobs: PackedBlob[], created: Date): { header: PackHeader; tail: Buffer } {
  const header: PackHeader = { version: 1, created: created.toISOString(), blobs };
  const sealedHeader = seal(key, Buffer.from(JSON.stringify(header), 'utf8'));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(sealedHeader.length, 0);
  return { header, tail: Buffer.concat([sealedHeader, length]) };
}

/**
 * Builds one pack in a single buffer: each sealed blob is copied in as it comes (its pieces can
 * be collected at once), then `finish` appends the sealed header and its length.
 */
export class PackAssembler {
  private buffer: Buffer;
  private size = 0;
  private readonly entries: PackedBlob[] = [];

  /**
   * `capacity`: the bytes expected (pages never written are never resident); it grows if needed.
   * `reuse`: the buffer of a pack already stored, to fill again instead of allocating.
   */
  constructor(capacity: number, reuse?: Buffer) {
    this.buffer =
      reuse !== undefined && reuse.length >= capacity ? reuse : Buffer.allocUnsafeSlow(Math.max(1024, capacity));
  }

  /** The whole buffer, for the next pack once this one is stored (this assembler is done then). */
  get storage(): Buffer {
    return this.buffer;
  }

  get length(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  add(id: string, type: 'data' | 'tree', rawLength: number, sealed: SealedParts | Uint8Array): PackedBlob {
    const pieces = piecesOf(sealed);
    const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
    this.reserve(length);
    const entry: PackedBlob = { id, type, offset: this.size, length, rawLength };
    for (const piece of pieces) {
      this.buffer.set(piece, this.size);
      this.size += piece.length;
    }
    this.entries.push(entry);
    return entry;
  }

  /** A copy of stored bytes (a blob not uploaded yet), as `StreamedPack.read` answers it. */
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.buffer.subarray(offset, offset + length));
  }

  finish(key: Uint8Array, created = new Date()): BuiltPack {
    const { header, tail } = packTail(key, this.entries, created);
    this.reserve(tail.length);
    this.buffer.set(tail, this.size);
    this.size += tail.length;
    const bytes = this.buffer.subarray(0, this.size);
    return { name: sha256Hex(bytes), bytes, header };
  }

  private reserve(more: number): void {
    if (this.size + more <= this.buffer.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(this.size + more, Math.ceil(this.buffer.length * 1.5)));
    this.buffer.copy(grown, 0, 0, this.size);
    this.buffer = grown;
  }
}

/** Bytes a streamed pack gathers before it writes them out. */
const SEGMENT = 4 * 1024 * 1024;
/** Spare segments kept for the next ones: one filling and two being written need no fresh memory. */
const SPARE_SEGMENTS = 4;

/**
 * Builds one pack straight into its object (`Backend.createWriter`): sealed blobs are copied
 * into a segment of 4 MiB, and each full segment is written out (in order, hashed as it goes)
 * while the next fills, so the pack is never whole in memory. `finish` writes the sealed header
 * and its length and commits the object under its hash; `abort` drops it.
 */
export class StreamedPack {
  private readonly entries: PackedBlob[] = [];
  private readonly hash = createHash('sha256');
  private segment: Buffer;
  /** Bytes in `segment`, and bytes before it (written, or queued to be). */
  private filled = 0;
  private flushed = 0;
  /** Segments written or being written, oldest first, with their place in the pack. */
  private readonly queued: { at: number; bytes: Buffer; written: Promise<void> }[] = [];
  private failure: { error: unknown } | undefined;

  /**
   * `segments`: spare segment buffers shared by the packs of a session (taken from, given back
   * to): fresh memory costs a page fault per 4 KiB, more than the copy into it.
   */
  constructor(
    private readonly writer: Promise<ObjectWriter>,
    private readonly segments: Buffer[] = [],
  ) {
    this.segment = this.takeSegment();
    // A writer that could not be made fails the first write, seen at `drain` or `finish`.
    void awaitedLater(writer);
  }

  get length(): number {
    return this.flushed + this.filled;
  }

  get count(): number {
    return this.entries.length;
  }

  add(id: string, type: 'data' | 'tree', rawLength: number, sealed: SealedParts | Uint8Array): PackedBlob {
    const entry: PackedBlob = { id, type, offset: this.length, length: 0, rawLength };
    for (const piece of piecesOf(sealed)) this.append(piece);
    entry.length = this.length - entry.offset;
    this.entries.push(entry);
    return entry;
  }

  /** Segments waiting to be written, beyond the one filling. */
  get backlog(): number {
    return this.queued.length;
  }

  /** Waits until at most `segments` are waiting to be written; throws a write's failure. */
  async drain(segments = 0): Promise<void> {
    while (this.queued.length > segments) await this.queued[0]!.written;
    if (this.failure !== undefined) throw this.failure.error;
  }

  /** Bytes of a blob added before, from memory or from what was written. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.flushed)
      return Buffer.from(this.segment.subarray(offset - this.flushed, offset - this.flushed + length));
    const inMemory = this.queued.find((q) => offset >= q.at && offset + length <= q.at + q.bytes.length);
    if (inMemory !== undefined)
      return Buffer.from(inMemory.bytes.subarray(offset - inMemory.at, offset - inMemory.at + length));
    // Written out (perhaps partly still queued): wait for the writes, then read the object.
    await Promise.all(this.queued.map((q) => q.written));
    if (this.failure !== undefined) throw this.failure.error;
    const writer = await this.writer;
    if (offset + length <= this.flushed) return writer.read(offset, length);
    const head = await writer.read(offset, this.flushed - offset);
    return Buffer.concat([head, this.segment.subarray(0, offset + length - this.flushed)]);
  }

  /** Writes the rest and the header, and commits the pack under its hash. */
  async finish(
    key: Uint8Array,
    options: CallOptions = {},
    created = new Date(),
  ): Promise<{ name: string; size: number; header: PackHeader }> {
    const { header, tail } = packTail(key, this.entries, created);
    this.append(tail);
    const last = this.segment;
    if (this.filled > 0) this.queue(last.subarray(0, this.filled));
    await this.drain();
    this.giveSegment(last);
    const name = this.hash.digest('hex');
    await (await this.writer).commit(name, options);
    return { name, size: this.flushed, header };
  }

  async abort(): Promise<void> {
    await Promise.allSettled(this.queued.map((q) => q.written));
    await (await this.writer.catch(() => null))?.abort();
  }

  private append(bytes: Uint8Array): void {
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, this.segment.length - this.filled);
      this.segment.set(bytes.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === this.segment.length) {
        this.queue(this.segment);
        this.segment = this.takeSegment();
      }
    }
  }

  private takeSegment(): Buffer {
    // Page-aligned, so a local repository can write full segments past the page cache.
    return this.segments.pop() ?? alignedBuffer(SEGMENT);
  }

  private giveSegment(segment: Buffer): void {
    if (this.segments.length < SPARE_SEGMENTS && !this.segments.includes(segment)) this.segments.push(segment);
  }

  /** Queues a full (or the last) segment to be written after the ones before it. */
  private queue(bytes: Buffer): void {
    this.hash.update(bytes);
    const at = this.flushed;
    this.flushed += bytes.length;
    this.filled = 0;
    const before = this.queued.at(-1)?.written ?? Promise.resolve();
    const item = {
      at,
      bytes,
      written: before
        .then(async () => {
          if (this.failure === undefined) await (await this.writer).write(bytes);
        })
        .catch((error: unknown) => {
          this.failure ??= { error };
        })
        .finally(() => {
          this.queued.splice(this.queued.indexOf(item), 1);
          if (bytes.length === SEGMENT) this.giveSegment(bytes);
        }),
    };
    this.queued.push(item);
  }
}

/** Assembles a pack from sealed blobs (their offsets are assigned here, in order). */
export function buildPack(
  key: Uint8Array,
  blobs: { id: string; type: 'data' | 'tree'; rawLength: number; sealed: SealedParts | Uint8Array }[],
  created = new Date(),
): BuiltPack {
  const total = blobs.reduce((sum, b) => sum + piecesOf(b.sealed).reduce((n, piece) => n + piece.length, 0), 0);
  const assembler = new PackAssembler(total + 1024 + blobs.length * 256);
  for (const blob of blobs) assembler.add(blob.id, blob.type, blob.rawLength, blob.sealed);
  return assembler.finish(key, created);
}

function parseHeader(key: Uint8Array, sealedHeader: Uint8Array, name: string, headerStart: number): PackHeader {
  const what = `the header of pack ${name}`;
  let header: PackHeader;
  try {
    header = PackHeaderSchema.parse(JSON.parse(openSealed(key, sealedHeader, what).toString('utf8')));
  } catch (error) {
    if (error instanceof QuiesceError) throw error;
    throw new QuiesceError('damaged', `${what} is damaged: it is not a valid pack header`, { cause: error });
  }
  for (const blob of header.blobs) {
    if (blob.offset + blob.length > headerStart)
      throw new QuiesceError('damaged', `${what} is damaged: blob ${blob.id} lies outside the pack`);
  }
  return header;
}

/** The header of a pack held in memory. */
export function readPackHeaderFromBytes(key: Uint8Array, bytes: Uint8Array, name: string): PackHeader {
  if (bytes.length < 4)
    throw new QuiesceError('damaged', `pack ${name} is damaged: ${bytes.length} bytes is too short`);
  const length = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).readUInt32LE(bytes.length - 4);
  if (length > bytes.length - 4 || length > MAX_HEADER)
    throw new QuiesceError('damaged', `pack ${name} is damaged: its header length ${length} is impossible`);
  const start = bytes.length - 4 - length;
  return parseHeader(key, bytes.subarray(start, bytes.length - 4), name, start);
}

/** The header of a stored pack, with two ranged reads from its end. */
export async function loadPackHeader(
  backend: Backend,
  key: Uint8Array,
  name: string,
  size: number,
  options: CallOptions = {},
): Promise<PackHeader> {
  if (size < 4) throw new QuiesceError('damaged', `pack ${name} is damaged: ${size} bytes is too short`);
  const trailer = await backend.load('data', name, { ...options, offset: size - 4, length: 4 });
  const length = trailer.readUInt32LE(0);
  if (length > size - 4 || length > MAX_HEADER)
    throw new QuiesceError('damaged', `pack ${name} is damaged: its header length ${length} is impossible`);
  const start = size - 4 - length;
  const sealedHeader = await backend.load('data', name, { ...options, offset: start, length });
  return parseHeader(key, sealedHeader, name, start);
}
