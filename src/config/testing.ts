// Helpers for the config tests: a document written line by line, and assertions on the
// positioned issues a ConfigError lists.
import assert from 'node:assert/strict';
import { ConfigError, parseConfig, type ConfigIssue } from './index.ts';

export const FILE = 'quiesce.yaml';

/** A document from lines, so that line N of the file is argument N. */
export const lines = (...text: string[]): string => `${text.join('\n')}\n`;

export function mistakes(text: string): ConfigError {
  try {
    parseConfig(text, FILE);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('the config was accepted');
}

/** Asserts that the error has an issue at `line` for `field` whose message matches, and that its message says so. */
export function assertIssue(error: ConfigError, line: number, field: string, message: RegExp): ConfigIssue {
  const issue = error.issues.find(
    (candidate) => candidate.line === line && candidate.field === field && message.test(candidate.message),
  );
  assert.ok(
    issue,
    `no issue at line ${line} for ${field || '(document)'} matching ${String(message)}; got:\n${error.message}`,
  );
  const where = field === '' ? `${FILE}:${line}:${issue.column}: ` : `${FILE}:${line}:${issue.column}: ${field}: `;
  assert.ok(error.message.includes(where), `the message lacks "${where}":\n${error.message}`);
  return issue;
}
