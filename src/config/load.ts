/**
 * Reading the config file: YAML in, a validated `Config` out, or a `ConfigError` that lists
 * every mistake with its file, line, column and field.
 */
import { LineCounter, parseDocument, type Document } from 'yaml';
import { messageOf } from '../util/index.ts';
import { ConfigError, type ConfigIssue } from './config-error.ts';
import { checkConfig } from './cross-checks.ts';
import { readConfigText } from './read-config-file.ts';
import { errorMap, formatPath, knownKeys, unknownKeyMessage } from './issue-messages.ts';
import { ConfigSchema, type Config, type ConfigInput } from './schema.ts';
import { collectionKeys, isNode, keyAt, locate, type Path } from './yaml-positions.ts';
import { MAX_YAML_DEPTH, tooDeepAt } from './yaml-depth.ts';

type Position = { line: number; column: number };
/** An issue before it is told its file. */
type Finding = Omit<ConfigIssue, 'file'>;
/** The line and column of an offset in the text (1:1 when there is none). */
type PositionOf = (offset: number | undefined) => Position;

/**
 * Parses and validates a config file's text. `file` only names the file in messages.
 *
 * @example
 * const config = parseConfig('writers:\n  - { type: sqlite, name: shop, path: /srv/shop.db }\n', 'quiesce.yaml');
 * config.writers[0]; // { type: 'sqlite', name: 'shop', path: '/srv/shop.db', honorFull: true, lockTimeout: 5000 }
 * @throws ConfigError listing every problem, in file order.
 */
export function parseConfig(text: string, file: string): Config {
  refuseDeepNesting(text, file);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
  const at = positionIn(lineCounter);
  const yaml = documentFindings(doc, at);
  const issues: ConfigIssue[] = yaml.findings.map((finding) => ({ file, ...finding }));
  if (yaml.fatal) throw new ConfigError(sortIssues(issues));

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    issues.push({ file, ...at(0), field: '', message: `cannot read the YAML: ${messageOf(error)}` });
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
    text = await readConfigText(file, options.signal);
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

/** A text nested deeper than any config needs is refused before the YAML composer recurses into it. */
function refuseDeepNesting(text: string, file: string): void {
  const offset = tooDeepAt(text);
  if (offset === undefined) return;
  const lineCounter = new LineCounter();
  lineCounter.addNewLine(0);
  for (let at = text.indexOf('\n'); at >= 0 && at < offset; at = text.indexOf('\n', at + 1))
    lineCounter.addNewLine(at + 1);
  const position = positionIn(lineCounter)(offset);
  throw new ConfigError([
    {
      file,
      ...position,
      field: '',
      message: `lists and maps nested deeper than ${MAX_YAML_DEPTH} levels: a config file needs only a few`,
    },
  ]);
}

function positionIn(lineCounter: LineCounter): PositionOf {
  return (offset) => {
    if (offset === undefined) return { line: 1, column: 1 };
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
}

/**
 * What the YAML parser found. Syntax errors, keys that are lists or maps, and an empty document
 * are fatal: what follows would only be noise. Duplicate keys and warnings (an unknown tag, say)
 * are reported along with the schema's findings.
 */
function documentFindings(doc: Document, at: PositionOf): { findings: Finding[]; fatal: boolean } {
  const findings: Finding[] = [];
  const add = (offset: number | undefined, field: string, message: string): void => {
    findings.push({ ...at(offset), field, message });
  };
  let fatal = false;
  const linesWithError = new Set<number>();
  for (const error of doc.errors) {
    const offset = error.pos[0];
    if (error.code === 'DUPLICATE_KEY') {
      findings.push(duplicateKey(doc, offset, at));
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
  return { findings, fatal: fatal || doc.contents === null };
}

function duplicateKey(doc: Document, offset: number, at: PositionOf): Finding {
  const found = keyAt(doc, offset);
  const first = found?.first?.key;
  const firstLine = isNode(first) && first.range ? ` (first at line ${at(first.range[0]).line})` : '';
  return {
    ...at(offset),
    field: found ? formatPath(found.path) : '',
    message: `duplicate key${found ? ` "${String(found.path.at(-1))}"` : ''}${firstLine}: a key may appear only once in a map`,
  };
}

// ---------------------------------------------------------------------------------------------
// Validation: zod issues -> positioned issues

type Locator = (path: Path, atKey: boolean) => Position;

function validate(data: unknown, locate: Locator): { config?: Config; issues: Finding[] } {
  const result = ConfigSchema.safeParse(data, { errorMap });
  if (result.success) return { config: result.data, issues: [] };

  const issues: Finding[] = [];
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
