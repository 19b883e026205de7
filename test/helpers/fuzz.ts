// Seeded hostile inputs for decoders, and the tally of what each decoder made of them: every
// input must decode to a valid value or be refused with a QuiesceError that has a message;
// anything else thrown (TypeError, RangeError, SyntaxError, a ZodError) is a crash.
import { QuiesceError } from '../../src/model/index.ts';
import type { SeededRandom } from './kill-harness.ts';

/** Bytes that mean something to a parser. */
const SPECIAL = Buffer.from('{}[]",:\\\n\r\t 0-.eE+/\u0000\u00ff', 'latin1');

/** One byte-level mutation of `input`, and its name. */
export function mutateBytes(input: Buffer, random: SeededRandom): { bytes: Buffer; how: string } {
  const at = () => random.int(input.length + 1);
  switch (random.int(8)) {
    case 0: {
      const out = Buffer.from(input);
      const flips = 1 + random.int(8);
      for (let i = 0; i < flips && out.length > 0; i++) out[random.int(out.length)]! ^= 1 << random.int(8);
      return { bytes: out, how: `${flips} bit flips` };
    }
    case 1: {
      const n = at();
      return { bytes: input.subarray(0, n), how: `truncated to ${n}` };
    }
    case 2: {
      const n = at();
      const extra = random.bytes(1 + random.int(64));
      return {
        bytes: Buffer.concat([input.subarray(0, n), extra, input.subarray(n)]),
        how: `${extra.length} bytes inserted`,
      };
    }
    case 3: {
      const from = at();
      const to = Math.min(input.length, from + 1 + random.int(64));
      return { bytes: Buffer.concat([input.subarray(0, from), input.subarray(to)]), how: `${to - from} bytes deleted` };
    }
    case 4: {
      const out = Buffer.from(input);
      for (let i = 0; i < 1 + random.int(4) && out.length > 0; i++)
        out[random.int(out.length)] = SPECIAL[random.int(SPECIAL.length)]!;
      return { bytes: out, how: 'syntax bytes replaced' };
    }
    case 5: {
      const from = at();
      const piece = input.subarray(from, from + 1 + random.int(256));
      const into = at();
      return { bytes: Buffer.concat([input.subarray(0, into), piece, input.subarray(into)]), how: 'a slice repeated' };
    }
    case 6:
      return { bytes: random.bytes(random.int(4096)), how: 'random bytes' };
    default:
      return { bytes: Buffer.alloc(random.int(64), SPECIAL[random.int(SPECIAL.length)]), how: 'one byte repeated' };
  }
}

/** A value of any JSON type, hostile where it can be: huge and fractional numbers, long strings, odd keys. */
export function hostileValue(random: SeededRandom, depth = 0): unknown {
  switch (random.int(depth > 3 ? 7 : 9)) {
    case 0:
      return null;
    case 1:
      return random.int(2) === 0;
    case 2:
      return [0, -1, 1.5, 2 ** 53 + 2, -(2 ** 63), 1e308, -1e-308, 2 ** 32 + 5, 4096, 65_536, 2 ** 17][random.int(11)];
    case 3:
      return ['', '0', '-1', '.', '..', '/', 'a/b', '\u0000', '💣', 'x'.repeat(5000), '__proto__', 'data', 'tree'][
        random.int(13)
      ];
    case 4:
      return 'a'.repeat(random.int(4) === 0 ? 1 << 18 : 300);
    case 5:
      return '0123456789abcdef'.repeat(4);
    case 6:
      return new Date(random.int(2 ** 42)).toISOString();
    case 7:
      return Array.from({ length: random.int(4) }, () => hostileValue(random, depth + 1));
    default: {
      const out: Record<string, unknown> = {};
      for (let i = random.int(4); i > 0; i--)
        out[['a', 'id', 'type', '__proto__', 'constructor'][random.int(5)]!] = hostileValue(random, depth + 1);
      return out;
    }
  }
}

/** Every place in a JSON value: the parent and the key or index there. */
function places(value: unknown, out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = []) {
  if (Array.isArray(value))
    value.forEach((item, i) => {
      out.push({ parent: value, key: i });
      places(item, out);
    });
  else if (value !== null && typeof value === 'object')
    for (const [key, item] of Object.entries(value)) {
      out.push({ parent: value as Record<string, unknown>, key });
      places(item, out);
    }
  return out;
}

/** Nesting `depth` levels deep, as JSON text (a parser that recurses overflows its stack). */
export function deepJson(depth: number, random: SeededRandom): string {
  return random.int(2) === 0
    ? `${'['.repeat(depth)}${']'.repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** Numbers JSON can write and JavaScript cannot hold exactly (or at all). */
const EXTREME_NUMBERS = ['1e999', '-0', '1e-999', '123456789012345678901234567890', '0.1e400', '-9007199254740993'];

/**
 * One structural mutation of a valid JSON document, as JSON text: a value of another type, a
 * hostile number or string, a key removed or added, or a value (or the whole) nested thousands deep.
 */
export function mutateJson(document: unknown, random: SeededRandom): { text: string; how: string } {
  const copy = JSON.parse(JSON.stringify(document)) as unknown;
  const all = places(copy);
  const place = all[random.int(all.length)];
  const choice = random.int(10);
  if (place === undefined || choice === 9)
    return { text: deepJson(1000 + random.int(20_000), random), how: 'deep nesting' };
  const { parent, key } = place;
  const set = (value: unknown) => ((parent as Record<string | number, unknown>)[key] = value);
  switch (choice) {
    case 0:
    case 1:
    case 2:
      set(hostileValue(random));
      return { text: JSON.stringify(copy), how: `${key} replaced by another value` };
    case 3:
    case 4:
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
      return { text: JSON.stringify(copy), how: `${key} removed` };
    case 5:
      if (Array.isArray(parent)) parent.push(hostileValue(random));
      else parent[`x${random.int(10)}`] = hostileValue(random);
      return { text: JSON.stringify(copy), how: `a member added beside ${key}` };
    case 6:
      set('__deep__');
      return {
        text: JSON.stringify(copy).replace('"__deep__"', deepJson(1000 + random.int(20_000), random)),
        how: `${key} nested deep`,
      };
    default: {
      const number = EXTREME_NUMBERS[random.int(EXTREME_NUMBERS.length)]!;
      set('__number__');
      return { text: JSON.stringify(copy).replace('"__number__"', number), how: `${key} is ${number}` };
    }
  }
}

export interface Tally {
  readonly name: string;
  inputs: number;
  decoded: number;
  refused: number;
  crashes: string[];
  maxMs: number;
}

export function tally(name: string): Tally {
  return { name, inputs: 0, decoded: 0, refused: 0, crashes: [], maxMs: 0 };
}

/** What is wrong with an error a decoder threw, or null when it is a proper refusal. */
function improperError(error: unknown, errorClass: abstract new (...args: never[]) => Error): string | null {
  if (!(error instanceof errorClass)) {
    const name = error instanceof Error ? error.constructor.name : typeof error;
    return `${name}: ${error instanceof Error ? error.message.slice(0, 200) : String(error)}`;
  }
  if (error.message.trim() === '') return `${error.constructor.name} with an empty message`;
  return null;
}

/** What a check answers for a value that is the decoder's documented refusal (openKeyFile's null). */
export const REFUSED = Symbol('refused');

/**
 * Runs one decode: `check` looks at what came back (null when it is valid, REFUSED when it is a
 * refusal, else what is wrong).
 * A crash is recorded with `what` (how the input was made), so the seed and its index replay it.
 */
export async function attempt<T>(
  t: Tally,
  what: string,
  decode: () => T | Promise<T>,
  check: (value: Awaited<T>) => string | null | typeof REFUSED = () => null,
  errorClass: abstract new (...args: never[]) => Error = QuiesceError,
): Promise<void> {
  t.inputs++;
  const started = performance.now();
  try {
    const value = await decode();
    const wrong = check(value);
    if (wrong === REFUSED) t.refused++;
    else if (wrong === null) t.decoded++;
    else t.crashes.push(`${what}: decoded to an invalid value: ${wrong}`);
  } catch (error) {
    const wrong = improperError(error, errorClass);
    if (wrong === null) t.refused++;
    else t.crashes.push(`${what}: ${wrong}`);
  } finally {
    t.maxMs = Math.max(t.maxMs, performance.now() - started);
  }
}

export function describeTally(t: Tally): string {
  return `${t.name}: ${t.inputs} inputs, ${t.decoded} decoded to valid values, ${t.refused} refused with a clear error, ${t.crashes.length} crashes, slowest ${t.maxMs.toFixed(1)} ms`;
}
