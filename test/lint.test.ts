// The lint holds the architecture: a deliberate cross-layer import, a deep import into another
// folder's internals, a print from the core and an overlong function are each refused.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';

const root = fileURLToPath(new URL('..', import.meta.url));
// The probes are not files on disk, so the type-aware rules (which need the TypeScript project)
// are off for them; the rules under test are not type-aware.
const eslint = new ESLint({
  cwd: root,
  overrideConfig: [{ files: ['**/lint-probe.ts'], ...tseslint.configs.disableTypeChecked }],
});

/** The rule ids ESLint reports for `code` as if it were the file at `path` (relative to the root). */
async function violations(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}${path}` });
  assert.ok(result, `eslint gave no result for ${path}`);
  return result.messages.map((message) => `${message.ruleId ?? 'fatal'}: ${message.message}`);
}

function assertRefused(found: string[], rule: string, words: RegExp): void {
  assert.ok(
    found.some((line) => line.startsWith(`${rule}:`) && words.test(line)),
    `expected ${rule} matching ${String(words)}, got:\n${found.join('\n')}`,
  );
}

describe('the lint holds the layers of the source map (README)', { timeout: 120_000 }, () => {
  test('a provider importing the coordinator is refused', async () => {
    const found = await violations(
      'src/providers/copy/lint-probe.ts',
      "import { runSnapshotSet } from '../../coordinator/index.ts';\nexport const probe = runSnapshotSet;\n",
    );
    assertRefused(found, 'no-restricted-imports', /never import the coordinator/);
  });

  test('the repository importing a writer is refused', async () => {
    const found = await violations(
      'src/repository/lint-probe.ts',
      "import { createSqliteWriter } from '../writers/sqlite/index.ts';\nexport const probe = createSqliteWriter;\n",
    );
    assertRefused(found, 'no-restricted-imports', /knows nothing of writers/);
  });

  test('a deep import into repository/ internals is refused, its index.ts is not', async () => {
    const deep = await violations(
      'src/backup/lint-probe.ts',
      "import { PackWriter } from '../repository/pack-file.ts';\nexport type Probe = PackWriter;\n",
    );
    assertRefused(deep, 'no-restricted-imports', /through its index\.ts/);
    const fine = await violations(
      'src/backup/lint-probe.ts',
      "import { openRepository } from '../repository/index.ts';\nexport const probe = openRepository;\n",
    );
    assert.deepEqual(
      fine.filter((line) => line.startsWith('no-restricted-imports')),
      [],
    );
  });

  test('console.log in backup/ is refused, in cli/ it is not', async () => {
    const core = await violations(
      'src/backup/lint-probe.ts',
      "export function probe(): void {\n  console.log('hi');\n}\n",
    );
    assertRefused(core, 'no-console', /Unexpected console/);
    const cli = await violations('src/cli/lint-probe.ts', "export function probe(): void {\n  console.log('hi');\n}\n");
    assert.deepEqual(
      cli.filter((line) => line.startsWith('no-console')),
      [],
    );
  });

  test('a function over 120 lines is refused', async () => {
    const body = Array.from({ length: 130 }, (_, i) => `  total += ${i};`).join('\n');
    const found = await violations(
      'src/model/lint-probe.ts',
      `export function probe(): number {\n  let total = 0;\n${body}\n  return total;\n}\n`,
    );
    assertRefused(found, 'max-lines-per-function', /too many lines \(13\d\)/);
  });
});
