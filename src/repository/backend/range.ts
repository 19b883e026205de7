import { BackendError, type LoadOptions } from './backend.ts';

export interface ByteRange {
  offset: number;
  length: number;
}

/** The byte range a load asks for, or undefined for the whole object; throws on a malformed one. */
export function checkRange(options: LoadOptions, object: string): ByteRange | undefined {
  const { offset, length } = options;
  if (offset === undefined && length === undefined) return undefined;
  if (offset === undefined || length === undefined) {
    throw new BackendError(
      `load ${object}: offset and length must be given together (got offset ${offset}, length ${length})`,
    );
  }
  if (
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    !Number.isSafeInteger(length) ||
    length < 0 ||
    length > 0x7fff_ffff
  ) {
    throw new BackendError(`load ${object}: invalid range (offset ${offset}, length ${length})`);
  }
  return { offset, length };
}
