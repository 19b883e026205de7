// A worker thread of BlobEncoderPool: compresses and seals blobs in the format of blob-codec.ts
// (flag byte 0 raw / 1 zstd, then AES-256-GCM as nonce || ciphertext || tag), answering the
// pieces: head (nonce and encrypted flag), body, tag. Plain JavaScript, so it runs whatever
// loader the main thread used for TypeScript.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import binding from 'zstd-napi/binding.js';

const MIB = 1024 * 1024;
/**
 * The cipher runs over this much at a time, its output copied into a recycled body buffer: one
 * call over a whole chunk makes the cipher allocate the chunk's size afresh, and fresh memory
 * (a page fault per 4 KiB) cost more than the encryption itself on the machines we measured.
 */
const PIECE = 64 * 1024;
/** Body buffers kept for reuse (the main thread hands them back once copied into a pack). */
const MAX_SPARE = 3;

const key = workerData.key;
const macKey = workerData.macKey;
const level = workerData.level;
const cctx = new binding.CCtx();
const dctx = new binding.DCtx();
// Reused for every blob: compression allocates nothing.
let scratch = new Uint8Array(0);
const spareBodies = [];

/**
 * Every cipher piece is a fresh 64 KiB buffer, dead once copied. V8 frees such memory only when
 * a collection finds its handle, and it counts on collecting after some tens of MiB of it: that
 * much dead memory sat in this thread, and the allocator kept it afterwards. A young-generation
 * collection after every few MiB of pieces frees them at once (it takes well under a
 * millisecond on this thread's small heap). Where the flag cannot be set, V8's own pace stays.
 */
setFlagsFromString('--expose-gc');
const collect = runInNewContext('typeof gc === "function" ? gc : undefined');
const COLLECT_EVERY = 4 * MIB;
let sinceCollect = 0;
function madeGarbage(bytes) {
  sinceCollect += bytes;
  if (sinceCollect < COLLECT_EVERY || collect === undefined) return;
  sinceCollect = 0;
  collect({ type: 'minor' });
}

function takeBody(length) {
  let best = -1;
  for (let i = 0; i < spareBodies.length; i += 1) {
    const size = spareBodies[i].byteLength;
    if (size >= length && (best < 0 || size < spareBodies[best].byteLength)) best = i;
  }
  if (best >= 0) return spareBodies.splice(best, 1)[0];
  return new ArrayBuffer(Math.max(1, Math.ceil(length / MIB)) * MIB);
}

/**
 * Runs a cipher or decipher over `source` a piece at a time into a recycled buffer; answers a
 * view of exactly the bytes written. GCM is a stream cipher: as many out as in.
 */
function cipherInto(cipher, source) {
  const out = new Uint8Array(takeBody(source.length), 0, source.length);
  let written = 0;
  for (let offset = 0; offset < source.length; offset += PIECE) {
    const piece = cipher.update(source.subarray(offset, offset + PIECE));
    out.set(piece, written);
    written += piece.length;
    madeGarbage(piece.length);
  }
  return out.subarray(0, written);
}

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
  const source = useZstd ? scratch.subarray(0, compressedLength) : plaintext;
  const body = cipherInto(cipher, source);
  const rest = cipher.final();
  if (rest.length > 0 || body.length !== source.length) throw new Error('the cipher did not answer one byte per byte');
  return { head, body, tag: new Uint8Array(cipher.getAuthTag()) };
}

/** The sealed blob's bytes (head, body, tag) into `out` at `offset`; answers their length. */
function sealInto(out, offset, plaintext) {
  const { head, body, tag } = encode(plaintext);
  out.set(head, offset);
  out.set(body, offset + head.length);
  out.set(tag, offset + head.length + body.length);
  if (spareBodies.length < MAX_SPARE) spareBodies.push(body.buffer); // copied: the next body goes there again
  return head.length + body.length + tag.length;
}

/**
 * Whole small files, each one chunk (no longer than the chunker's minimum): read here, named
 * (keyed SHA-256, like blobIdOf), compressed and sealed, all into one buffer. The main thread
 * keeps the ones it does not have yet. One message for many files, and no file I/O on the main
 * thread: for small files, those round trips cost more than the bytes.
 */
function sealFiles(files) {
  const capacity = files.reduce((sum, file) => sum + file.size + 64, 0);
  const out = new Uint8Array(takeBody(capacity), 0, capacity);
  const items = [];
  let offset = 0;
  for (const file of files) {
    let content;
    try {
      content = readFileSync(file.path);
    } catch (error) {
      items.push({ error: error instanceof Error ? error.message : String(error), code: error?.code ?? null });
      continue;
    }
    if (content.length !== file.size) {
      items.push({ error: `it was ${file.size} bytes when listed and ${content.length} when read`, code: 'CHANGED' });
      continue;
    }
    madeGarbage(content.length);
    const id = createHmac('sha256', macKey).update(content).digest('hex');
    const length = sealInto(out, offset, content);
    items.push({ id, rawLength: content.length, offset, length });
    offset += length;
  }
  return { data: out, items };
}

/** A blob that cannot be what was asked for: the main thread reports it as damaged. */
class Damaged extends Error {}

/**
 * The plaintext of a sealed blob (the inverse of `encode`, as blob-codec's decodeBlob), proven
 * to be blob `id`: it must authenticate, decompress to `rawLength` bytes and hash to its id.
 */
function open(sealed, rawLength, id) {
  if (sealed.length < 12 + 1 + 16) throw new Damaged('it is too short to be a sealed blob');
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const framed = cipherInto(decipher, sealed.subarray(12, sealed.length - 16));
  try {
    decipher.final();
  } catch {
    throw new Damaged('it does not authenticate (run quiesce check --read-data)');
  }
  let plain;
  if (framed[0] === 0) plain = framed.subarray(1);
  else if (framed[0] === 1) {
    plain = new Uint8Array(takeBody(rawLength), 0, rawLength);
    let length;
    try {
      length = dctx.decompress(plain, framed.subarray(1));
    } catch {
      throw new Damaged('its zstd frame does not decompress');
    }
    if (length !== rawLength) throw new Damaged(`it decompresses to ${length} bytes, not ${rawLength}`);
    if (spareBodies.length < MAX_SPARE) spareBodies.push(framed.buffer);
  } else throw new Damaged(`unknown blob encoding ${framed[0]}`);
  if (plain.length !== rawLength || createHmac('sha256', macKey).update(plain).digest('hex') !== id) {
    throw new Damaged('its content does not match its id (run quiesce check --read-data)');
  }
  return plain;
}

// The input buffer goes back with the answer, for the next blob; the body comes back by
// `recycle` once the main thread has copied it into a pack: no allocation per blob here.
parentPort.on('message', (message) => {
  if (message.recycle !== undefined) {
    if (spareBodies.length < MAX_SPARE) spareBodies.push(message.recycle);
    return;
  }
  if (message.open !== undefined) {
    // The sealed bytes' buffer goes back with the answer: the main thread reads the next blob into it.
    const { data, length, rawLength, id } = message.open;
    try {
      const plain = open(new Uint8Array(data, 0, length), rawLength, id);
      parentPort.postMessage(
        {
          seq: message.seq,
          opened: { data: plain.buffer, offset: plain.byteOffset, length: plain.length },
          input: data,
        },
        [plain.buffer, data],
      );
    } catch (error) {
      parentPort.postMessage(
        {
          seq: message.seq,
          error: error instanceof Error ? error.message : String(error),
          damaged: error instanceof Damaged,
          input: data,
        },
        [data],
      );
    }
    return;
  }
  if (message.files !== undefined) {
    try {
      const batch = sealFiles(message.files);
      parentPort.postMessage({ seq: message.seq, batch }, [batch.data.buffer]);
    } catch (error) {
      parentPort.postMessage({ seq: message.seq, error: error instanceof Error ? error.message : String(error) });
    }
    return;
  }
  try {
    const plaintext = new Uint8Array(message.data, 0, message.length);
    // Named here (keyed SHA-256, like blobIdOf) when the main thread has not: it keeps the
    // sealed blob only if the id is new to it.
    const id = message.name === true ? createHmac('sha256', macKey).update(plaintext).digest('hex') : undefined;
    const parts = encode(plaintext);
    parentPort.postMessage({ seq: message.seq, parts, id, input: message.data }, [parts.body.buffer, message.data]);
  } catch (error) {
    parentPort.postMessage(
      { seq: message.seq, error: error instanceof Error ? error.message : String(error), input: message.data },
      [message.data],
    );
  }
});
