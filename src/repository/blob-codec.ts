import { createCipheriv, randomBytes } from 'node:crypto';
import { QuiesceError } from '../model/index.ts';
import { zstdCompressScratch, zstdDecompress } from './compression.ts';
import { openSealed } from './crypto/seal.ts';

/**
 * How one blob is stored: `seal(flag || payload)` (see crypto/seal.ts), where the flag byte says
 * whether the payload is the plaintext itself (0) or one zstd frame of it (1). A blob that does
 * not shrink is stored raw, so incompressible data costs one byte plus the seal.
 *
 * The worker pool (blob-encoder-worker.mjs) writes the same format; keep the two in step.
 */
export const BLOB_RAW = 0;
export const BLOB_ZSTD = 1;

/**
 * A sealed blob in pieces, as the cipher produced them (so they are never copied until they go
 * into their pack): `nonce(12) || encrypted flag(1)`, the encrypted payload, the tag(16).
 */
export interface SealedParts {
  head: Uint8Array;
  body: Uint8Array;
  tag: Uint8Array;
}

export function sealedLength(parts: SealedParts): number {
  return parts.head.length + parts.body.length + parts.tag.length;
}

export function joinSealed(parts: SealedParts): Buffer {
  return Buffer.concat([parts.head, parts.body, parts.tag]);
}

export function encodeBlob(key: Uint8Array, plaintext: Uint8Array, level: number): SealedParts {
  const compressed = zstdCompressScratch(plaintext, level);
  const useZstd = compressed.length < plaintext.length;
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const head = new Uint8Array(13);
  head.set(nonce, 0);
  head.set(cipher.update(Uint8Array.of(useZstd ? BLOB_ZSTD : BLOB_RAW)), 12);
  const body = cipher.update(useZstd ? compressed : plaintext);
  cipher.final();
  return { head, body, tag: new Uint8Array(cipher.getAuthTag()) };
}

/** The plaintext of a stored blob; `what` names it in errors ("blob 3f… in pack 9c…"). */
export function decodeBlob(key: Uint8Array, sealed: Uint8Array, what: string): Buffer {
  const framed = openSealed(key, sealed, what);
  const flag = framed[0];
  const payload = framed.subarray(1);
  if (flag === BLOB_RAW) return payload;
  if (flag === BLOB_ZSTD) {
    try {
      return zstdDecompress(payload);
    } catch (error) {
      throw new QuiesceError('damaged', `${what} is damaged: its zstd frame does not decompress`, { cause: error });
    }
  }
  throw new QuiesceError('damaged', `${what} is damaged: unknown blob encoding ${String(flag)}`);
}
