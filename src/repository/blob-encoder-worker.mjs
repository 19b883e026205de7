// A worker thread of BlobEncoderPool: compresses and seals blobs in the format of blob-codec.ts
// (flag byte 0 raw / 1 zstd, then AES-256-GCM as nonce || ciphertext || tag), answering the
// pieces: head (nonce and encrypted flag), body, tag. Plain JavaScript, so it runs whatever
// loader the main thread used for TypeScript.
import { createCipheriv, randomBytes } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import binding from 'zstd-napi/binding.js';

const key = workerData.key;
const level = workerData.level;
const cctx = new binding.CCtx();
// Reused for every blob: compression allocates nothing.
let scratch = new Uint8Array(0);

function encode(plaintext) {
  const bound = binding.compressBound(plaintext.length);
  if (scratch.length < bound) scratch = new Uint8Array(bound);
  const compressedLength = cctx.compress(scratch, plaintext, level);
  const useZstd = compressedLength < plaintext.length;
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const head = new Uint8Array(13);
  head.set(nonce, 0);
  head.set(cipher.update(Uint8Array.of(useZstd ? 1 : 0)), 12);
  let body = cipher.update(useZstd ? scratch.subarray(0, compressedLength) : plaintext);
  cipher.final();
  // Transferable only if it owns its whole buffer (large outputs do).
  if (body.byteOffset !== 0 || body.byteLength !== body.buffer.byteLength) body = new Uint8Array(body);
  return { head, body, tag: new Uint8Array(cipher.getAuthTag()) };
}

// The input buffer goes back with the answer, for the next blob: no allocation per blob here,
// so this thread's heap never holds garbage waiting for a collection.
parentPort.on('message', (message) => {
  try {
    const parts = encode(new Uint8Array(message.data, 0, message.length));
    parentPort.postMessage({ seq: message.seq, parts, input: message.data }, [parts.body.buffer, message.data]);
  } catch (error) {
    parentPort.postMessage({ seq: message.seq, error: error instanceof Error ? error.message : String(error), input: message.data }, [message.data]);
  }
});
