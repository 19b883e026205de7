import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { DEFAULT_CHUNKER_PARAMS, validateChunkerParams, type ChunkerParams } from './chunker/fastcdc.ts';
import { DEFAULT_COMPRESSION_LEVEL } from './compression.ts';
import { addKey, DEFAULT_KDF, deriveKeys, newMasterSecret, openMasterSecret, type KdfParams } from './crypto/keys.ts';
import { tryOpenSealed } from './crypto/seal.ts';
import { assertNoRepositoryObjects } from './init-guard.ts';
import type { LockOptions } from './locks.ts';
import { QuiesceRepository, type Session } from './repository.ts';
import type { Repository } from './repository-api.ts';
import {
  checkConfigPrefix,
  CONFIG_NAME,
  decodeConfig,
  encodeConfig,
  sealedConfig,
  type RepositoryConfig,
} from './repository-config.ts';
import { isNotFound, storageError } from './storage-error.ts';

export interface OpenRepositoryOptions extends CallOptions {
  /** Target pack size in bytes (default 16 MiB). */
  packSize?: number;
  /** Worker threads compressing and sealing blobs (default: one per spare core, at most 2; 0 works on the calling thread). */
  workers?: number;
  /** Plaintext bytes being compressed and sealed at once before `saveBlob` waits (default 8 MiB). */
  maxPendingBytes?: number;
  /** scrypt cost for passwords added with `addPassword` (default N=2^15, r=8, p=1). */
  kdf?: KdfParams;
  /** Lock refresh and staleness (default 5 and 30 minutes). */
  lock?: LockOptions;
  /** Told once per damaged object the session meets without failing (an index object that does not open). */
  onWarning?: (message: string) => void;
}

export interface InitRepositoryOptions extends OpenRepositoryOptions {
  /** Chunk sizes, fixed for the repository's life (default 256 KiB / 1 MiB / 4 MiB). */
  chunker?: ChunkerParams;
  /** zstd level for every blob (default 3). */
  compressionLevel?: number;
}

export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
/**
 * The calling thread chunks and hashes (about as much work as zstd and AES together), so one
 * worker per spare core, at most 2: on 2 cores one worker is as fast as two and holds less memory.
 */
export const DEFAULT_WORKERS = Math.min(2, Math.max(1, availableParallelism() - 1));
const DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024;

/**
 * Creates a repository on an empty backend and opens it: writes the first key (the master
 * secret sealed under `password`), then the config (last: a location with a config is a
 * repository). Refuses a backend that already has one, or any object of one (init-guard.ts).
 *
 * @example
 * const repo = await initRepository(new FsBackend('/var/backups/q'), password);
 */
export async function initRepository(
  backend: Backend,
  password: string,
  options: InitRepositoryOptions = {},
): Promise<Repository> {
  await assertNoRepositoryObjects(backend, options);
  const chunker = options.chunker ?? DEFAULT_CHUNKER_PARAMS;
  validateChunkerParams(chunker);
  const master = newMasterSecret();
  const keys = deriveKeys(master);
  const config: RepositoryConfig = {
    version: 1,
    id: randomBytes(32).toString('hex'),
    chunker: { minSize: chunker.minSize, avgSize: chunker.avgSize, maxSize: chunker.maxSize },
    compression: { algorithm: 'zstd', level: options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL },
  };
  let keyName: string;
  try {
    keyName = await addKey(backend, master, password, options.kdf ?? DEFAULT_KDF, options);
    await backend.save('config', CONFIG_NAME, encodeConfig(keys.encryption, config), options);
  } catch (error) {
    throw storageError(error, backend.location);
  }
  return QuiesceRepository.start(session(backend, master, keyName, config, options), options);
}

/**
 * Opens an existing repository with one of its passwords and loads its index.
 * Errors: `not-a-repository` (no or a foreign config), `unsupported-version`, `wrong-password`.
 *
 * @example
 * const repo = await openRepository(backend, password);
 * try { … } finally { await repo.close(); }
 */
export async function openRepository(
  backend: Backend,
  password: string,
  options: OpenRepositoryOptions = {},
): Promise<Repository> {
  const none = (cause?: unknown): QuiesceError =>
    new QuiesceError(
      'not-a-repository',
      `no quiesce repository at ${backend.location}: run quiesce init`,
      cause === undefined ? {} : { cause },
    );
  if (!(await backend.exists(options))) {
    for await (const key of backend.list('keys', options)) {
      throw new QuiesceError(
        'not-a-repository',
        `the repository at ${backend.location} has no config (its key files, such as keys/${key.name}, are there): put the config back from a copy of the repository`,
      );
    }
    throw none();
  }
  let configBytes: Buffer;
  try {
    configBytes = await backend.load('config', CONFIG_NAME, options);
  } catch (error) {
    if (isNotFound(error)) throw none(error);
    throw error;
  }
  checkConfigPrefix(configBytes, backend.location);
  const sealed = sealedConfig(configBytes);
  const { master, keyName } = await openMasterSecret(
    backend,
    password,
    (candidate) => tryOpenSealed(deriveKeys(candidate).encryption, sealed) !== null,
    options,
  );
  const config = decodeConfig(deriveKeys(master).encryption, configBytes, backend.location);
  return QuiesceRepository.start(session(backend, master, keyName, config, options), options);
}

/** The session a repository opens with: its options resolved to their defaults. */
function session(
  backend: Backend,
  master: Buffer,
  keyName: string,
  config: RepositoryConfig,
  options: OpenRepositoryOptions,
): Session {
  return {
    backend,
    master,
    keyName,
    config,
    packSize: options.packSize ?? DEFAULT_PACK_SIZE,
    workers: options.workers ?? DEFAULT_WORKERS,
    maxPendingBytes: options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES,
    kdf: options.kdf ?? DEFAULT_KDF,
    lock: options.lock,
    onWarning: options.onWarning ?? (() => {}),
  };
}
