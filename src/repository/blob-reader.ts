import { QuiesceError, type CallOptions } from '../model/index.ts';
import { BackendError, type Backend, type LoadOptions } from './backend/backend.ts';
import { decodeBlob } from './blob-codec.ts';
import { DamagedBlobError } from './blob-encoder-pool.ts';
import type { BlobLocation } from './blob-index.ts';
import { blobIdOf, type RepositoryKeys } from './crypto/keys.ts';
import { isNotFound } from './storage-error.ts';

/**
 * Opens a sealed blob and proves it is the one asked for: its plaintext must hash (keyed) to
 * its id. Anything else is `damaged`, naming the blob and its pack; never wrong data.
 */
export function verifyBlob(
  keys: RepositoryKeys,
  id: string,
  sealed: Uint8Array,
  pack: string,
  rawLength?: number,
): Buffer {
  const what = `blob ${id} in pack ${pack}`;
  const plain = decodeBlob(keys.encryption, sealed, what);
  if ((rawLength !== undefined && plain.length !== rawLength) || blobIdOf(keys, plain) !== id) {
    throw new QuiesceError(
      'damaged',
      `${what} is damaged: its content does not match its id (run quiesce check --read-data)`,
    );
  }
  return plain;
}

/**
 * Opens and verifies a sealed blob elsewhere (on a worker), or answers null to have it done here.
 * Rejects with `DamagedBlobError` for a blob that is not the one asked for.
 */
export type BlobOpener = (sealed: Buffer, rawLength: number, id: string) => Promise<Buffer> | null;

/**
 * Loads a pack's bytes, `range` of them or all; a missing pack, or one shorter than `range`
 * reaches (truncated, emptied), is `damaged`, naming `id`, a blob it should hold.
 */
export async function loadPack(
  backend: Backend,
  pack: string,
  id: string,
  range: { offset: number; length: number } | null,
  options: CallOptions & Pick<LoadOptions, 'into'> = {},
): Promise<Buffer> {
  try {
    return await backend.load('data', pack, range === null ? options : { ...options, ...range });
  } catch (error) {
    if (isNotFound(error)) {
      throw new QuiesceError(
        'damaged',
        `pack ${pack}, which holds blob ${id}, is missing from the repository at ${backend.location} (run quiesce check)`,
        { cause: error },
      );
    }
    const short = range === null ? null : await shortPack(backend, pack, id, range, error, options);
    if (short !== null) throw short;
    // A pack cut short (truncated or emptied) is damage to report, not a storage fault.
    if (error instanceof BackendError && error.kind === 'other' && /short read/.test(error.message)) {
      throw new QuiesceError(
        'damaged',
        `pack ${pack}, which holds blob ${id}, is shorter than the index says: it was truncated (run quiesce check --read-data, then quiesce repair packs)`,
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * After a ranged load failed: `damaged` when the pack is shorter than the range reaches (a short
 * read: the pack was truncated or emptied); null when it is not, or cannot be told.
 */
async function shortPack(
  backend: Backend,
  pack: string,
  id: string,
  range: { offset: number; length: number },
  error: unknown,
  options: CallOptions,
): Promise<QuiesceError | null> {
  if (!(error instanceof BackendError) || error.kind !== 'other' || options.signal?.aborted) return null;
  const size = await backend.stat('data', pack, options).then(
    (info) => info.size,
    () => null,
  );
  if (size === null || size >= range.offset + range.length) return null;
  return new QuiesceError(
    'damaged',
    `pack ${pack}, which holds blob ${id}, is damaged: it has ${size} bytes, fewer than the ` +
      `${range.offset + range.length} the index says (truncated? run quiesce check --read-data, then quiesce repair packs)`,
    { cause: error },
  );
}

/** Reads one blob's byte range from its pack (a ranged load), then verifies it (through `opener` when it takes it). */
export async function readBlob(
  backend: Backend,
  keys: RepositoryKeys,
  id: string,
  location: BlobLocation,
  options: CallOptions & Pick<LoadOptions, 'into'> = {},
  opener?: BlobOpener,
): Promise<Buffer> {
  const sealed = await loadPack(
    backend,
    location.pack,
    id,
    { offset: location.offset, length: location.length },
    options,
  );
  const opening = opener?.(sealed, location.rawLength, id) ?? null;
  if (opening === null) return verifyBlob(keys, id, sealed, location.pack, location.rawLength);
  try {
    return await opening;
  } catch (error) {
    if (error instanceof DamagedBlobError)
      throw new QuiesceError('damaged', `blob ${id} in pack ${location.pack} is damaged: ${error.message}`);
    throw error;
  }
}
