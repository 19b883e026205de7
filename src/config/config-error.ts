import { QuiesceError } from '../model/index.ts';

/** One mistake in a config file. `line` and `column` are 1-based; both are 0 when the problem is the file as a whole. */
export interface ConfigIssue {
  file: string;
  line: number;
  column: number;
  /** Where in the document, e.g. `writers[1].freeze`; empty for the document itself or a YAML syntax error. */
  field: string;
  message: string;
}

/** `quiesce.yaml:7:14: writers[1].freeze: message`, leaving out what is unknown. */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.column}` : issue.file;
  return issue.field === '' ? `${where}: ${issue.message}` : `${where}: ${issue.field}: ${issue.message}`;
}

/**
 * Every mistake found in a config file, each with its position (code `bad-config`: the CLI
 * exits with status 2). The message has one line per issue, in the order they appear in the file.
 */
export class ConfigError extends QuiesceError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], options: { cause?: unknown } = {}) {
    super('bad-config', ConfigError.describe(issues), { cause: options.cause });
    this.name = 'ConfigError';
    this.issues = issues;
  }

  private static describe(issues: readonly ConfigIssue[]): string {
    const first = issues[0];
    if (first === undefined) return 'invalid config';
    if (issues.length === 1) return formatIssue(first);
    const files = new Set(issues.map((issue) => issue.file));
    const header = `${issues.length} problems in config file ${[...files].join(', ')}:`;
    return [header, ...issues.map(formatIssue)].join('\n');
  }
}
