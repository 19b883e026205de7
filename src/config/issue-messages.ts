/**
 * The words of a config error: zod's issues rewritten for the operator, the known key nearest
 * to a misspelt one, and a field's path as the operator reads it (`writers[1].freeze`).
 */
import { z } from 'zod';
import { isRecord } from '../util/index.ts';
import type { Path } from './yaml-positions.ts';

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'a whole number',
  nan: 'not a number',
  boolean: 'true or false',
  array: 'a list',
  object: 'a map',
  null: 'nothing (null)',
  undefined: 'nothing',
};

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a map' : typeof value;
}

/** Messages written for the operator; issues with their own message (refinements) keep it. */
export const errorMap: z.ZodErrorMap = (issue, ctx) => {
  switch (issue.code) {
    case z.ZodIssueCode.invalid_type: {
      if (issue.received === 'undefined') {
        const key = issue.path.at(-1);
        return { message: key === undefined ? 'required' : `required key "${String(key)}" is missing` };
      }
      if (issue.path.length === 0 && issue.expected === 'object') {
        return { message: `the config file must be a map of settings (key: value), got ${describeValue(ctx.data)}` };
      }
      const expected = TYPE_NAMES[issue.expected] ?? issue.expected;
      let hint = '';
      if (issue.expected === 'array' && (typeof ctx.data === 'string' || typeof ctx.data === 'number')) {
        hint = ` (a list of one is written [${String(ctx.data)}])`;
      }
      return { message: `expected ${expected}, got ${describeValue(ctx.data)}${hint}` };
    }
    case z.ZodIssueCode.invalid_enum_value:
      return {
        message: `expected one of ${issue.options.map(String).join(', ')}; got ${JSON.stringify(issue.received)}`,
      };
    case z.ZodIssueCode.too_small:
      if (issue.type === 'array')
        return { message: `must have at least ${String(issue.minimum)} item${issue.minimum === 1 ? '' : 's'}` };
      if (issue.type === 'string' && issue.minimum === 1) return { message: 'must not be empty' };
      return { message: ctx.defaultError };
    default:
      return { message: ctx.defaultError };
  }
};

export function unknownKeyMessage(key: string, known: readonly string[]): string {
  const suggestion = closest(key, known);
  if (suggestion !== undefined) return `unknown key "${key}"; did you mean "${suggestion}"?`;
  return known.length > 0 ? `unknown key "${key}"; known keys: ${known.join(', ')}` : `unknown key "${key}"`;
}

/** The known key nearest to `key` (ignoring case, "-" and "_"), if it is near enough to be a typo. */
export function closest(key: string, known: readonly string[]): string | undefined {
  const fold = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');
  const folded = fold(key);
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.ceil(folded.length / 3)) + 1;
  for (const candidate of known) {
    const distance = levenshtein(folded, fold(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The keys the schema knows for the object at `path` in `data` (a writer's depend on its type). */
export function knownKeys(root: z.ZodTypeAny, data: unknown, path: Path): string[] | undefined {
  let schema = root;
  let value = data;
  let index = 0;
  for (;;) {
    if (schema instanceof z.ZodEffects) schema = schema.innerType() as z.ZodTypeAny;
    else if (schema instanceof z.ZodDefault) schema = schema.removeDefault() as z.ZodTypeAny;
    else if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable)
      schema = schema.unwrap() as z.ZodTypeAny;
    else if (schema instanceof z.ZodDiscriminatedUnion) {
      const union = schema as z.ZodDiscriminatedUnion<string, z.AnyZodObject[]>;
      const option = isRecord(value) ? union.optionsMap.get(value[union.discriminator] as string) : undefined;
      if (option === undefined) return undefined;
      schema = option;
    } else if (index === path.length) {
      return schema instanceof z.ZodObject ? Object.keys(schema.shape as z.ZodRawShape) : undefined;
    } else {
      const segment = path[index++]!;
      if (schema instanceof z.ZodObject) {
        const next = (schema.shape as z.ZodRawShape)[segment];
        if (next === undefined) return undefined;
        schema = next;
        value = isRecord(value) ? value[segment] : undefined;
      } else if (schema instanceof z.ZodArray) {
        schema = schema.element as z.ZodTypeAny;
        value = Array.isArray(value) ? (value as unknown[])[Number(segment)] : undefined;
      } else if (schema instanceof z.ZodRecord) {
        schema = schema.valueSchema as z.ZodTypeAny;
        value = isRecord(value) ? value[segment] : undefined;
      } else {
        return undefined;
      }
    }
  }
}

/** `writers[1].freeze`, `providers["/srv/files"]`. */
export function formatPath(path: Path): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}
