import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CallOptions } from '../../model/index.ts';
import { BackendError, type Backend } from './backend.ts';
import { FsBackend } from './fs-backend.ts';
import { RetryBackend, type RetryOptions } from './retry-backend.ts';
import type { S3BackendOptions } from './s3-backend.ts';

export interface OpenBackendOptions extends CallOptions {
  /** For a local path: make the repository directory tree (see `FsBackend.create`). S3 needs nothing made. */
  create?: boolean;
  /** For `s3://` locations. */
  s3?: S3BackendOptions;
  /** For remote backends, which are wrapped in a `RetryBackend`. */
  retry?: RetryOptions;
}

/**
 * The backend for a repository location: a local path (or `file://` URL) gives an `FsBackend`,
 * `s3://bucket/prefix` a `RetryBackend` around an `S3Backend`. Any other scheme is refused.
 *
 * @example
 * const backend = await openBackend(process.env.QUIESCE_REPO ?? '/var/backups/quiesce');
 * if (!(await backend.exists())) throw new Error('no repository there: run quiesce init');
 */
export async function openBackend(location: string, options: OpenBackendOptions = {}): Promise<Backend> {
  if (location.trim() === '') throw new BackendError('no repository location given');
  if (location.startsWith('s3://')) {
    options.signal?.throwIfAborted();
    // The AWS SDK loads only for an S3 repository: it costs a third of a second at start.
    const { S3Backend } = await import('./s3-backend.ts');
    return new RetryBackend(new S3Backend(location, options.s3), options.retry);
  }
  let path = location;
  if (location.startsWith('file://')) {
    path = fileURLToPath(location);
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(location) && !isAbsolute(location)) {
    throw new BackendError(
      `unsupported repository location ${JSON.stringify(location)}: use a local path or s3://bucket/prefix`,
    );
  }
  return options.create === true ? await FsBackend.create(path, options) : new FsBackend(resolve(path));
}
