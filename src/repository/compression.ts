import binding from 'zstd-napi/binding.js';
import { Decompressor } from 'zstd-napi';

/** zstd level 3: the tool's default. */
export const DEFAULT_COMPRESSION_LEVEL = 3;

let cctx: InstanceType<typeof binding.CCtx> | undefined;
let scratch = Buffer.alloc(0);
let decompressor: Decompressor | undefined;

/**
 * One zstd frame of `data`, written into a scratch buffer that the next call reuses: the
 * caller consumes (seals) it at once. No allocation per blob, so no garbage to collect.
 */
export function zstdCompressScratch(data: Uint8Array, level: number = DEFAULT_COMPRESSION_LEVEL): Buffer {
  cctx ??= new binding.CCtx();
  const bound = binding.compressBound(data.length);
  if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound);
  const length = cctx.compress(scratch, data, level);
  return scratch.subarray(0, length);
}

/** The content of a zstd frame; throws on anything that is not one. */
export function zstdDecompress(data: Uint8Array): Buffer {
  decompressor ??= new Decompressor();
  return decompressor.decompress(data);
}
