// Deep nesting in a config file is refused with a positioned error before the YAML composer
// recurses into it: repeated stack overflows inside the composer used to abort the process
// ("FATAL ERROR: RegExpCompiler Allocation failed") on the third file of 10,000 levels.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from './index.ts';
import { MAX_YAML_DEPTH, tooDeepAt } from './yaml-depth.ts';

function refusal(text: string): ConfigError {
  try {
    parseConfig(text, 'deep.yaml');
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, not ${String(error)}`);
    return error;
  }
  assert.fail('the config was accepted');
}

describe('config nesting depth', () => {
  test('flow lists 10,000 deep, many times over, are refused with a position and the process lives', () => {
    const text = `paths: ${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    for (let i = 0; i < 20; i++) {
      const error = refusal(text);
      assert.match(error.message, /^deep\.yaml:1:\d+: lists and maps nested deeper than 64 levels/);
    }
  });

  test('block maps nested by indentation are refused at the line that goes too deep', () => {
    const text = Array.from({ length: 500 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n');
    const error = refusal(text);
    assert.equal(error.issues[0]!.line, MAX_YAML_DEPTH + 1);
  });

  test('a config nested as deep as a real one parses, and the limit is exact', () => {
    const config = parseConfig(
      'writers:\n  - type: sqlite\n    name: shop\n    path: /srv/shop.db\npaths: [/srv]\n',
      'ok.yaml',
    );
    assert.deepEqual(config.paths, ['/srv']);
    assert.equal(tooDeepAt(`${'['.repeat(MAX_YAML_DEPTH)}${']'.repeat(MAX_YAML_DEPTH)}`), undefined);
    assert.equal(tooDeepAt(`${'['.repeat(MAX_YAML_DEPTH + 1)}${']'.repeat(MAX_YAML_DEPTH + 1)}`), MAX_YAML_DEPTH);
  });
});
