// How a command finds its repository and password: --repo, QUIESCE_REPO or the config's
// `repository`; --password-file or QUIESCE_PASSWORD. Composition of backend and repository.
import { join } from 'node:path';
import { proveCatalogCache } from '../catalog/index.ts';
import type { Config } from '../config/index.ts';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import { messageOf, readRegularFile } from '../util/index.ts';
import { stdio } from './output.ts';
import {
  BackendError,
  initRepository,
  openBackend,
  openRepository,
  type Backend,
  type OpenBackendOptions,
  type Repository,
} from '../repository/index.ts';

export interface RepositoryFlags {
  repo?: string;
  passwordFile?: string;
}

export function repositoryLocation(flags: RepositoryFlags, config: Config | null): string {
  const location = flags.repo ?? process.env.QUIESCE_REPO ?? config?.repository;
  if (!location)
    throw new QuiesceError(
      'bad-usage',
      'no repository: give --repo, set QUIESCE_REPO, or set repository in the config',
    );
  return location;
}

/** A password file is read only when it is a regular file of at most this many bytes (a FIFO would hang). */
export const MAX_PASSWORD_FILE_BYTES = 64 << 10;

export async function readPassword(flags: RepositoryFlags): Promise<string> {
  if (flags.passwordFile) {
    try {
      const text = await readRegularFile(flags.passwordFile, MAX_PASSWORD_FILE_BYTES);
      const password = text.replace(/\r?\n$/, '');
      if (password.length === 0)
        throw new QuiesceError('bad-usage', `the password file ${flags.passwordFile} is empty`);
      return password;
    } catch (error) {
      if (error instanceof QuiesceError) throw error;
      throw new QuiesceError('bad-usage', `cannot read the password file ${flags.passwordFile}: ${messageOf(error)}`);
    }
  }
  const env = process.env.QUIESCE_PASSWORD;
  if (env) return env;
  throw new QuiesceError('bad-usage', 'no password: set QUIESCE_PASSWORD or give --password-file');
}

/**
 * The backend of a location. Opening one only checks (or, with `create`, makes) the location,
 * so what it refuses (an unknown scheme, a file where a directory should be) is bad usage, exit 2;
 * a full disk stays a failure.
 */
async function backendAt(location: string, options: OpenBackendOptions): Promise<Backend> {
  try {
    return await openBackend(location, options);
  } catch (error) {
    if (error instanceof BackendError && error.kind !== 'no-space')
      throw new QuiesceError('bad-usage', error.message, { cause: error });
    throw error;
  }
}

export async function createRepository(
  flags: RepositoryFlags,
  config: Config | null,
  options: CallOptions = {},
): Promise<Repository> {
  const backend = await backendAt(repositoryLocation(flags, config), { create: true, signal: options.signal });
  return initRepository(backend, await readPassword(flags), { signal: options.signal });
}

export async function openRepositoryFromFlags(
  flags: RepositoryFlags,
  config: Config | null,
  options: CallOptions = {},
): Promise<Repository> {
  const backend = await backendAt(repositoryLocation(flags, config), { signal: options.signal });
  return openRepository(backend, await readPassword(flags), {
    signal: options.signal,
    onWarning: (message) => stdio.err(`quiesce: warning: ${message}`),
  });
}

/**
 * The catalog's cache file for a repository, under the state directory, proven first: a damaged
 * one is replaced (it is rebuilt from the manifests), and the user told so on stderr.
 */
export function catalogCachePath(config: Config, repository: Repository): string {
  const file = join(config.stateDir, 'catalog', `${repository.id}.sqlite`);
  const rebuilt = proveCatalogCache(file);
  if (rebuilt !== null) stdio.err(`quiesce: ${rebuilt}`);
  return file;
}
