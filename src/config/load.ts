/**
 * Reading the config file: YAML in, a validated `Config` out, or a `ConfigError` that lists
 * every mistake with its file, line, column and field.
 */
import { readFile } from 'node:fs/promises';
import {
  LineCounter,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  parseDocument,
  type Document,
  type Node,
  type Pair,
} from 'yaml';
import { z } from 'zod';
import { ConfigError, type ConfigIssue } from './config-error.ts';
import { ConfigSchema, checkConfig, type Config, type ConfigInput } from './schema.ts';

type Path = readonly (string | number)[];

/**
 * Parses and validates a config file's text. `file` only names the file in messages.
 *
 * @example
 * const config = parseConfig('writers:\n  - { type: sqlite, name: shop, path: /srv/shop.db }\n', 'quiesce.yaml');
 * config.writers[0]; // { type: 'sqlite', name: 'shop', path: '/srv/shop.db', honorFull: true, lockTimeout: 5000 }
 * @throws ConfigError listing every problem, in file order.
 */
export function parseConfig(text: string, file: string): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
  const at = (offset: number | undefined): { line: number; column: number } => {
    if (offset === undefined) return { line: 1, column: 1 };
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const issues: ConfigIssue[] = [];
  const add = (offset: number | undefined, field: string, message: string): void => {
    issues.push({ file, ...at(offset), field, message });
  };

  // YAML: syntax errors stop here (what follows would only be noise); duplicate keys and
  // warnings (an unknown tag, say) are reported along with the schema's findings.
  let fatal = false;
  const linesWithError = new Set<number>();
  for (const error of doc.errors) {
    const offset = error.pos[0];
    if (error.code === 'DUPLICATE_KEY') {
      const found = keyAt(doc, offset);
      const first = found?.first?.key;
      const firstLine = isNode(first) && first.range ? ` (first at line ${at(first.range[0]).line})` : '';
      add(
        offset,
        found ? formatPath(found.path) : '',
        `duplicate key${found ? ` "${String(found.path.at(-1))}"` : ''}${firstLine}: a key may appear only once in a map`,
      );
      continue;
    }
    fatal = true;
    const { line } = at(offset);
    if (linesWithError.has(line)) continue; // one syntax error per line: the rest follow from it
    linesWithError.add(line);
    add(offset, '', `YAML syntax error: ${error.message}`);
  }
  for (const warning of doc.warnings) add(warning.pos[0], '', `YAML: ${warning.message}`);
  for (const { key, path } of collectionKeys(doc)) {
    fatal = true;
    add(key.range?.[0], formatPath(path), 'a key must be a plain string, not a list or a map');
  }

  if (!fatal && doc.contents === null) {
    add(0, '', 'the config file is empty: write at least one setting, e.g. "writers:" or "paths:"');
  }
  if (fatal || doc.contents === null) throw new ConfigError(sortIssues(issues));

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    add(0, '', `cannot read the YAML: ${error instanceof Error ? error.message : String(error)}`);
    throw new ConfigError(sortIssues(issues), { cause: error });
  }

  const result = validate(data, (path, atKey) => at(locate(doc, path, atKey)));
  for (const issue of result.issues) issues.push({ file, ...issue });
  if (issues.length > 0 || result.config === undefined) throw new ConfigError(sortIssues(issues));
  return result.config;
}

/**
 * Reads and validates a config file.
 *
 * @example const config = await loadConfig('/etc/quiesce/quiesce.yaml');
 * @throws ConfigError when the file cannot be read (naming the OS error) or is not valid.
 */
export async function loadConfig(file: string, options: { signal?: AbortSignal } = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, { encoding: 'utf8', signal: options.signal });
  } catch (error) {
    if (error instanceof Error && error.name === 'AbortError') throw error;
    throw new ConfigError(
      [{ file, line: 0, column: 0, field: '', message: `cannot read the config file: ${describeOsError(error)}` }],
      {
        cause: error,
      },
    );
  }
  return parseConfig(text, file);
}

/**
 * The embedded defaults (what `quiesce demo` runs on), with `overrides` applied and validated
 * like a config file.
 *
 * @example defaultConfig({ paths: ['/srv/files'] }).policy.freezeTimeout // 60000
 * @throws ConfigError (positions 0:0, file `<defaults>`) when `overrides` is not valid.
 */
export function defaultConfig(overrides: ConfigInput = {}): Config {
  const result = validate(overrides, () => ({ line: 0, column: 0 }));
  if (result.config === undefined || result.issues.length > 0) {
    throw new ConfigError(result.issues.map((issue) => ({ file: '<defaults>', ...issue })));
  }
  return result.config;
}

// ---------------------------------------------------------------------------------------------
// Validation: zod issues -> positioned issues

type Position = { line: number; column: number };
type Locator = (path: Path, atKey: boolean) => Position;

function validate(data: unknown, locate: Locator): { config?: Config; issues: Omit<ConfigIssue, 'file'>[] } {
  const result = ConfigSchema.safeParse(data, { errorMap });
  if (result.success) return { config: result.data, issues: [] };

  const issues: Omit<ConfigIssue, 'file'>[] = [];
  const seen = new Set<string>();
  const push = (path: Path, message: string, atKey = false): void => {
    const field = formatPath(path);
    const key = `${field}\0${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    issues.push({ ...locate(path, atKey), field, message });
  };
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(ConfigSchema, data, issue.path) ?? [];
      for (const key of issue.keys) push([...issue.path, key], unknownKeyMessage(key, known), true);
    } else {
      push(issue.path, issue.message);
    }
  }
  // zod skips refinements of an object that already failed; run the cross-field rules anyway.
  checkConfig(data, (path, message) => push(path, message));
  return { issues };
}

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
const errorMap: z.ZodErrorMap = (issue, ctx) => {
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

function unknownKeyMessage(key: string, known: readonly string[]): string {
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
function knownKeys(root: z.ZodTypeAny, data: unknown, path: Path): string[] | undefined {
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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((issue, order) => ({ issue, order }))
    .sort((a, b) => a.issue.line - b.issue.line || a.issue.column - b.issue.column || a.order - b.order)
    .map(({ issue }) => issue);
}

function describeOsError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as NodeJS.ErrnoException).code;
  if (code === undefined) return error.message;
  const text = error.message.replace(/^[A-Z0-9_]+: /, '').replace(/, \w+(?: '.*')?$/, '');
  return `${text} (${code})`;
}

// ---------------------------------------------------------------------------------------------
// The YAML document: where a path is, and which key sits at an offset

function isNode(value: unknown): value is Node {
  return isScalar(value) || isMap(value) || isSeq(value) || isAlias(value);
}

function keyString(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

/**
 * The offset a path points at: the value's node, or its key when `atKey` (unknown keys), or
 * else the deepest node that exists on the way (the parent map for a missing key).
 */
function locate(doc: Document, path: Path, atKey: boolean): number | undefined {
  let node: unknown = doc.contents;
  let offset = isNode(node) ? node.range?.[0] : undefined;
  for (let i = 0; i < path.length; i++) {
    if (isAlias(node)) node = node.resolve(doc);
    const segment = path[i]!;
    if (isMap(node)) {
      const pair = node.items.findLast((item) => keyString(item.key) === String(segment));
      if (pair === undefined) break;
      const key: unknown = pair.key;
      if ((atKey && i === path.length - 1) || !isNode(pair.value)) {
        return isNode(key) && key.range ? key.range[0] : offset;
      }
      node = pair.value;
    } else if (isSeq(node)) {
      const item: unknown = node.items[Number(segment)];
      if (!isNode(item)) break;
      node = item;
    } else {
      break;
    }
    if (isNode(node) && node.range) offset = node.range[0];
  }
  return offset;
}

interface FoundKey {
  path: (string | number)[];
  /** The earlier pair with the same key in the same map, if any. */
  first: Pair | undefined;
}

/** The path of the map key that starts at `offset` (for YAML's duplicate-key errors). */
function keyAt(doc: Document, offset: number): FoundKey | undefined {
  const visit = (node: unknown, path: (string | number)[]): FoundKey | undefined => {
    if (isMap(node)) {
      for (const [index, pair] of node.items.entries()) {
        const key: unknown = pair.key;
        const name = keyString(key);
        if (isNode(key) && key.range?.[0] === offset && name !== undefined) {
          return {
            path: [...path, name],
            first: node.items.slice(0, index).find((other) => keyString(other.key) === name),
          };
        }
        const found = name === undefined ? undefined : visit(pair.value, [...path, name]);
        if (found) return found;
      }
    } else if (isSeq(node)) {
      for (const [index, item] of node.items.entries()) {
        const found = visit(item, [...path, index]);
        if (found) return found;
      }
    }
    return undefined;
  };
  return visit(doc.contents, []);
}

/** Keys that are lists or maps (`? [a, b]: x`): JavaScript objects cannot hold them. */
function collectionKeys(doc: Document): { key: Node; path: (string | number)[] }[] {
  const out: { key: Node; path: (string | number)[] }[] = [];
  const visit = (node: unknown, path: (string | number)[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key: unknown = pair.key;
        if (isMap(key) || isSeq(key)) out.push({ key, path });
        else visit(pair.value, [...path, keyString(key) ?? '']);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => visit(item, [...path, index]));
    } else if (isPair(node)) {
      visit(node.value, path);
    }
  };
  visit(doc.contents, []);
  return out;
}
