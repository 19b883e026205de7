import { createHmac } from 'node:crypto';

/**
 * The 256 random 32-bit values of the Gear rolling hash, drawn from the chunker seed with
 * HMAC-SHA256 in counter mode: without the seed, chunk boundaries reveal nothing of the content.
 */
export function gearTable(seed: Uint8Array): Uint32Array {
  const bytes = Buffer.alloc(1024);
  for (let block = 0; block < 32; block += 1) {
    createHmac('sha256', seed)
      .update(`quiesce gear table ${block}`)
      .digest()
      .copy(bytes, block * 32);
  }
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i += 1) table[i] = bytes.readUInt32LE(i * 4);
  return table;
}
