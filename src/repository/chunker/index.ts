// Content-defined chunking: FastCDC over a Gear hash keyed by the repository's chunker seed,
// so equal content gives equal chunks and boundaries reveal nothing without the key.
export { FastCdcChunker, DEFAULT_CHUNKER_PARAMS, validateChunkerParams, type ChunkerParams } from './fastcdc.ts';
export { gearTable } from './gear-table.ts';
