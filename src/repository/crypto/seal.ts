import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { QuiesceError } from '../../model/index.ts';

/** Bytes a sealed object adds to its plaintext: a 12-byte nonce and a 16-byte tag. */
export const SEAL_OVERHEAD = 28;
const NONCE = 12;
const TAG = 16;

/**
 * Authenticated encryption of one object: `nonce(12) || AES-256-GCM ciphertext || tag(16)`,
 * with a fresh random nonce each time (so sealing the same plaintext twice gives different bytes).
 *
 * @example
 * const sealed = seal(keys.encryption, Buffer.from('hello'));
 * openSealed(keys.encryption, sealed, 'greeting'); // Buffer 'hello'
 */
export function seal(key: Uint8Array, plaintext: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const body = cipher.update(plaintext);
  const last = cipher.final();
  const tag = cipher.getAuthTag();
  return Buffer.concat([nonce, body, last, tag], NONCE + body.length + last.length + TAG);
}

/** Opens a sealed object, or answers null when it does not authenticate under this key. */
export function tryOpenSealed(key: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < SEAL_OVERHEAD) return null;
  const nonce = sealed.subarray(0, NONCE);
  const tag = sealed.subarray(sealed.length - TAG);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAuthTag(tag);
  try {
    const body = decipher.update(sealed.subarray(NONCE, sealed.length - TAG));
    const last = decipher.final();
    return last.length === 0 ? body : Buffer.concat([body, last]);
  } catch {
    return null;
  }
}

/**
 * Opens a sealed object; one that does not authenticate (a flipped bit, a truncation, another
 * repository's object) is `damaged`, named by `what` ("blob 3f…a1 in pack 9c…").
 */
export function openSealed(key: Uint8Array, sealed: Uint8Array, what: string): Buffer {
  const plain = tryOpenSealed(key, sealed);
  if (plain === null) {
    throw new QuiesceError('damaged', `${what} is damaged: it does not authenticate (run quiesce check --read-data)`);
  }
  return plain;
}
