// Type-aware lint. The per-folder `no-restricted-imports` rules keep the layers pointing one way
// (ARCHITECTURE.md): writers and providers never import the coordinator, the coordinator never
// imports a concrete writer or provider, and the model imports nothing of ours.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layer = (files, patterns) => ({
  files,
  rules: { 'no-restricted-imports': ['error', { patterns }] },
});

export default tseslint.config(
  { ignores: ['node_modules/**', 'web/dist/**', 'dist/**'] },
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
  layer(
    ['src/model/**'],
    [{ group: ['../*', '!../model/*'], message: 'model/ is the bottom layer: no I/O, no other layer.' }],
  ),
  layer(
    ['src/writers/**', 'src/providers/**'],
    [
      {
        group: ['**/coordinator/**', '**/coordinator', '**/cli/**', '**/backup/**'],
        message: 'writers and providers implement model interfaces; they never import the coordinator or above.',
      },
    ],
  ),
  layer(
    ['src/coordinator/**'],
    [
      {
        group: ['**/writers/*/**', '!**/writers/sdk/**', '**/providers/*/**', '**/cli/**'],
        message: 'the coordinator receives writers and providers as interfaces; composition happens in cli/.',
      },
    ],
  ),
  layer(
    ['src/rpc/**'],
    [
      {
        group: ['**/coordinator/**', '**/cli/**', '**/writers/sqlite/**', '**/writers/exec/**', '**/providers/**'],
        message: 'rpc/ carries the writer interface; it knows no concrete writer.',
      },
    ],
  ),
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
