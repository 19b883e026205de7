import type { CallOptions } from '../model/index.ts';
import { QuiesceError } from '../model/failure.ts';
import type { Backend } from './backend/backend.ts';
import { decodeBlob } from './blob-codec.ts';
import type { BlobLocation } from './blob-index.ts';
import { blobIdOf, type RepositoryKeys } from './crypto/keys.ts';
import { isNotFound } from './storage-error.ts';

/**
 * Opens a sealed blob and proves it is the one asked for: its plaintext must hash (keyed) to
 * its id. Anything else is `damaged`, naming the blob and its pack; never wrong data.
 */
export function verifyBlob(keys: RepositoryKeys, id: string, sealed: Uint8Array, pack: string, rawLength?: number): Buffer {
  const what = `blob ${id} in pack ${pack}`;
  const plain = decodeBlob(keys.encryption, sealed, what);
  if ((rawLength !== undefined && plain.length !== rawLength) || blobIdOf(keys, plain) !== id) {
    throw new QuiesceError('damaged', `${what} is damaged: its content does not match its id (run quiesce check --read-data)`);
  }
  return plain;
}

/** Reads one blob's byte range from its pack (a ranged load), then verifies it. */
export async function readBlob(backend: Backend, keys: RepositoryKeys, id: string, location: BlobLocation, options: CallOptions = {}): Promise<Buffer> {
  let sealed: Buffer;
  try {
    sealed = await backend.load('data', location.pack, { ...options, offset: location.offset, length: location.length });
  } catch (error) {
    if (isNotFound(error)) {
      throw new QuiesceError('damaged', `pack ${location.pack}, which holds blob ${id}, is missing from the repository at ${backend.location} (run quiesce check)`, { cause: error });
    }
    throw error;
  }
  return verifyBlob(keys, id, sealed, location.pack, location.rawLength);
}
