// File names are bytes on Linux, and not every name is valid UTF-8. quiesce keeps every name a
// string (a tree's JSON, the catalog, the output) and maps each byte that is not part of valid
// UTF-8 to a lone surrogate, U+DC80 + (byte - 0x80), Python's "surrogateescape". Valid UTF-8 never
// decodes to a lone surrogate, so the mapping is reversible, and a valid name keeps its usual form.
// Pure: no I/O.

/** The first and last code unit of an escaped byte (0x80..0xff; bytes below 0x80 are always valid). */
const ESCAPE_FIRST = 0xdc80;
const ANY_SURROGATE = /[\ud800-\udfff]/;
// With `u`, a surrogate pair is one code point: only lone escapes match (U+1F480 holds DC80 in UTF-16).
const ESCAPED = /[\udc80-\udcff]/u;
const ESCAPED_ALL = /([\udc80-\udcff])/u;

/** The length of the valid UTF-8 sequence at `i` (1 to 4), or 0 when the byte there starts none. */
function sequenceAt(bytes: Uint8Array, i: number): number {
  const b = bytes[i]!;
  if (b < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < bytes.length && bytes[i + k]! >= lo && bytes[i + k]! <= hi;
  if (b >= 0xc2 && b <= 0xdf) return cont(1) ? 2 : 0;
  if (b >= 0xe0 && b <= 0xef) {
    // No overlong forms (E0 needs A0..), no encoded surrogates (ED needs ..9F).
    const ok = b === 0xe0 ? cont(1, 0xa0) : b === 0xed ? cont(1, 0x80, 0x9f) : cont(1);
    return ok && cont(2) ? 3 : 0;
  }
  if (b >= 0xf0 && b <= 0xf4) {
    const ok = b === 0xf0 ? cont(1, 0x90) : b === 0xf4 ? cont(1, 0x80, 0x8f) : cont(1);
    return ok && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

/** A name (or path) read as bytes, as the string quiesce keeps: invalid bytes escaped. */
export function decodeRawName(bytes: Uint8Array): string {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buffer.toString('utf8');
  // The common case: valid UTF-8 (a literal U+FFFD in a valid name round-trips too).
  if (!text.includes('\ufffd') || Buffer.from(text).equals(buffer)) return text;
  let out = '';
  let i = 0;
  while (i < buffer.length) {
    const length = sequenceAt(buffer, i);
    if (length === 0) {
      out += String.fromCharCode(ESCAPE_FIRST + buffer[i]! - 0x80);
      i += 1;
    } else {
      out += buffer.toString('utf8', i, i + length);
      i += length;
    }
  }
  return out;
}

/** The bytes of a name (or path) kept as `decodeRawName` gives it. */
export function encodeRawName(name: string): Buffer {
  if (!ESCAPED.test(name)) return Buffer.from(name);
  // Odd parts are the escaped bytes, even parts the text between them.
  const parts = name.split(ESCAPED_ALL);
  return Buffer.concat(
    parts.map((part, i) => (i % 2 === 1 ? Buffer.of(part.charCodeAt(0) - ESCAPE_FIRST + 0x80) : Buffer.from(part))),
  );
}

/** Does the name hold an escaped byte (so the file system must be given its bytes)? */
export function hasRawBytes(name: string): boolean {
  return ESCAPED.test(name);
}

/** A path for the fs calls: itself when it is valid UTF-8, else its bytes. */
export function rawPath(path: string): string | Buffer {
  return ESCAPED.test(path) ? encodeRawName(path) : path;
}

/** Is `name` exactly what `decodeRawName` gives for some bytes (no other lone surrogate, no escaped valid UTF-8)? */
export function isCanonicalRawName(name: string): boolean {
  if (!ANY_SURROGATE.test(name)) return true;
  return decodeRawName(encodeRawName(name)) === name;
}

/**
 * A name or path for people: each escaped byte as `\xHH` (what `--path` takes back), the rest as
 * it is. A name holding a literal `\x` followed by two hex digits reads the same: `--path` then
 * selects both.
 */
export function displayRawName(name: string): string {
  if (!ESCAPED.test(name)) return name;
  return name.replace(/[\udc80-\udcff]/gu, (c) => `\\x${(c.charCodeAt(0) - ESCAPE_FIRST + 0x80).toString(16)}`);
}

/** A path as a user wrote it, with `\xHH` (HH from 80 to ff) read as that byte: the form `displayRawName` shows. */
export function parseRawNameEscapes(path: string): string {
  if (!path.includes('\\x')) return path;
  const escaped = path.replace(/\\x([89a-fA-F][0-9a-fA-F])/g, (_, hex: string) =>
    String.fromCharCode(ESCAPE_FIRST + parseInt(hex, 16) - 0x80),
  );
  // Escaped bytes that make valid UTF-8 together (`\xc3\xa9`) are that character.
  return decodeRawName(encodeRawName(escaped));
}
