// Type-aware lint that holds the shape of the tree (docs/design.md, "Source layout"):
// - layers point one way: each top folder of src/ may import only the folders below it;
// - another top folder is imported only through its index.ts (a plug-in folder of writers/ or
//   providers/ through its own index.ts), never a file inside it;
// - the core never prints: console only in cli/;
// - functions stay short and simple, files stay one concept.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** The top folders of src/, and the folders each may import besides itself. */
const LAYERS = {
  util: [],
  model: ['util'],
  rpc: ['model', 'util'],
  coordinator: ['model', 'util'],
  writers: ['rpc', 'model', 'util'],
  providers: ['model', 'util'],
  repository: ['model', 'util'],
  catalog: ['repository', 'model', 'util'],
  config: ['model', 'util'],
  backup: ['coordinator', 'repository', 'catalog', 'providers', 'model', 'util'],
  agent: ['backup', 'coordinator', 'repository', 'catalog', 'rpc', 'writers', 'providers', 'config', 'model', 'util'],
  daemon: ['backup', 'coordinator', 'repository', 'catalog', 'rpc', 'writers', 'providers', 'config', 'model', 'util'],
  cli: [
    'agent',
    'daemon',
    'backup',
    'coordinator',
    'repository',
    'catalog',
    'rpc',
    'writers',
    'providers',
    'config',
  ].concat(['model', 'util']),
};
const TOP = Object.keys(LAYERS);

/** Why a layer may not import the folders above or beside it. */
const WHY = {
  util: 'util/ is the bottom: it imports nothing of ours.',
  model: 'model/ is the vocabulary: no I/O, no other layer but util/.',
  rpc: 'rpc/ carries the writer and agent interfaces of model/; it knows no concrete writer, provider or engine.',
  coordinator:
    'the coordinator receives writers and providers as model interfaces; composition happens in cli/ and agent/.',
  writers: 'writers implement model interfaces; they never import the coordinator, providers or anything above.',
  providers: 'providers implement model interfaces; they never import the coordinator, writers or anything above.',
  repository: 'the repository stores trees of files and byte ranges: it knows nothing of writers, sets or the CLI.',
  catalog: 'the catalog is derived from the repository only.',
  config: 'config/ parses files into model types; it uses no engine.',
  backup: 'backup/ (the requester) is composed by cli/, agent/ and daemon/; it never imports them.',
  agent: 'agent/ is a composition root beside cli/; it never imports cli/ or daemon/.',
  daemon: 'daemon/ is a composition root beside cli/; it never imports cli/ or agent/.',
  cli: '',
};

/** `(../)+name/` at the start of an import path. */
const up = (names) => `^(?:\\.\\./)+(?:${names.join('|')})(?:/|$)`;

/** Imports of another top folder's insides: anything but its index.ts (or a plug-in's index.ts). */
const deepImport = (folder) => {
  const plugin = folder === 'writers' || folder === 'providers' ? '|[a-z0-9-]+/index\\.ts$' : '';
  return `^(?:\\.\\./)+${folder}/(?!index\\.ts$${plugin})`;
};

const layer = (folder) => {
  const forbidden = TOP.filter((other) => other !== folder && !LAYERS[folder].includes(other));
  const patterns = LAYERS[folder].map((other) => ({
    regex: deepImport(other),
    message: `import ${other}/ through its index.ts: its other files are its own business.`,
  }));
  if (forbidden.length > 0) patterns.unshift({ regex: up(forbidden), message: WHY[folder] });
  patterns.push({ regex: '^(?:\\.\\./)+(?:test|bench)/', message: 'src/ never imports test/ or bench/.' });
  return {
    files: [`src/${folder}/**/*.ts`],
    ignores: ['**/*.test.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns }] },
  };
};

export default tseslint.config(
  { ignores: ['node_modules/**', 'web/dist/**', 'dist/**', 'test/fixtures/lint/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/only-throw-error': 'error',
    },
  },
  { files: ['**/*.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
  {
    files: ['scripts/**', 'bin/**'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  ...TOP.map(layer),
  {
    // The shape of the product's code: a function a reader can hold, a file of one concept.
    files: ['src/**/*.ts'],
    rules: {
      'max-lines-per-function': ['error', { max: 120, skipBlankLines: true, skipComments: true }],
      complexity: ['error', 20],
      'max-lines': ['error', { max: 450, skipBlankLines: true, skipComments: true }],
      'no-console': 'error',
    },
  },
  {
    // The CLI is the one place that writes to the terminal (through cli/output.ts).
    files: ['src/cli/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    // A test file's describe() is a list of cases, not a function to read as one.
    files: ['**/*.test.ts'],
    rules: { 'max-lines-per-function': 'off', complexity: 'off', 'no-console': 'off' },
  },
  {
    files: ['test/**', 'bench/**', '**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // node:test's describe() and test() return promises the runner awaits itself.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'test', 'it', 'suite'] },
          ],
        },
      ],
    },
  },
);
