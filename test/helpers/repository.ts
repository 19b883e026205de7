// Repository options for tests: a cheap scrypt (the default costs ~100 ms per open, by design).
import type { InitRepositoryOptions } from '../../src/repository/index.ts';

export const TEST_REPOSITORY_OPTIONS: InitRepositoryOptions = { kdf: { N: 2 ** 10, r: 8, p: 1 } };
