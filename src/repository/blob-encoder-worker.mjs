// A worker thread of BlobEncoderPool: names, compresses and seals blobs in the format of
// blob-codec.ts (flag byte 0 raw / 1 zstd, then AES-256-GCM as nonce || ciphertext || tag),
// answering the pieces: head (nonce and encrypted flag), body, tag; and hashes finished packs.
// Plain JavaScript, so it runs whatever loader the main thread used for TypeScript.
//
// Messages (each answered with the same seq):
//   {seq, data, length}              encode: answers {parts, input}
//   {seq, op:'hash', data, length}   the blob id (HMAC-SHA256 under the mac key); keeps the
//                                    plaintext until {op:'encode', seq} or {op:'drop', seq}
//   {seq, op:'encode'}               encodes a kept plaintext: answers {parts, input}
//   {seq, op:'drop'}                 forgets a kept plaintext: answers {input}
//   {seq, op:'digest', shared, length}  SHA-256 hex of the first length bytes of a SharedArrayBuffer
import { createCipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import binding from 'zstd-napi/binding.js';

const key = workerData.key;
const mac = workerData.mac;
const level = workerData.level;
const cctx = new binding.CCtx();
// Reused for every blob: compression allocates nothing.
let scratch = new Uint8Array(0);
/** Plaintexts hashed and waiting for the main thread to say encode or drop, by seq. */
const kept = new Map();

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

function answerEncoded(seq, data, length) {
  try {
    const parts = encode(new Uint8Array(data, 0, length));
    parentPort.postMessage({ seq, parts, input: data }, [parts.body.buffer, data]);
  } catch (error) {
    parentPort.postMessage({ seq, error: error instanceof Error ? error.message : String(error), input: data }, [data]);
  }
}

// The input buffer goes back with the answer, for the next blob: no allocation per blob here,
// so this thread's heap never holds garbage waiting for a collection.
parentPort.on('message', (message) => {
  const { seq, op } = message;
  try {
    if (op === undefined) {
      answerEncoded(seq, message.data, message.length);
    } else if (op === 'hash') {
      const id = createHmac('sha256', mac).update(new Uint8Array(message.data, 0, message.length)).digest('hex');
      kept.set(seq, { data: message.data, length: message.length });
      parentPort.postMessage({ seq, id });
    } else if (op === 'encode' || op === 'drop') {
      const held = kept.get(seq);
      if (held === undefined) throw new Error(`no kept blob ${seq}`);
      kept.delete(seq);
      if (op === 'encode') answerEncoded(seq, held.data, held.length);
      else parentPort.postMessage({ seq, input: held.data }, [held.data]);
    } else if (op === 'digest') {
      const name = createHash('sha256').update(new Uint8Array(message.shared, 0, message.length)).digest('hex');
      parentPort.postMessage({ seq, name });
    } else {
      throw new Error(`unknown operation ${op}`);
    }
  } catch (error) {
    parentPort.postMessage({ seq, error: error instanceof Error ? error.message : String(error) });
  }
});
