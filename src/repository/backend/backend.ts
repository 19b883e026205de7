import type { CallOptions } from '../../model/index.ts';

/** The kinds of object a repository stores, each in its own namespace (a folder, a key prefix). */
export const OBJECT_TYPES = ['config', 'keys', 'data', 'index', 'manifests', 'locks'] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];

export interface ObjectInfo {
  name: string;
  size: number;
}

export interface LoadOptions extends CallOptions {
  /** Read `length` bytes from `offset` (both or neither). */
  offset?: number;
  length?: number;
  /**
   * For a ranged load: memory to read into instead of a fresh buffer (at least `length` bytes,
   * from offset 0 of its own ArrayBuffer). Fresh memory costs a page fault per page, more than
   * reading into it; a backend that cannot use it ignores it.
   */
  into?: (length: number) => Uint8Array;
}

/**
 * Where a repository's objects live: a local directory or an S3 bucket prefix.
 *
 * Contract:
 * - Names are lowercase hex (64 chars for content-named objects) or `config`; a backend may
 *   fan them out (data/ab/abcd…) but callers only see the plain name.
 * - `save` is atomic: a reader sees the whole object or nothing, never a torn one, even if the
 *   process dies mid-write (fs: temp name, fsync, rename, fsync dir; S3: one PutObject).
 *   Saving a name that exists replaces it; callers only do that for `locks`.
 * - `load` of a missing object throws `BackendError` of kind `not-found`; a short read is an error.
 * - `remove` is idempotent: removing a missing object succeeds.
 * - `list` yields every complete object of a type, in no particular order; never temp files.
 * - No method relies on conditional writes (s3rver does not enforce them): exclusion is the
 *   lock protocol's job, built on save/list/load/remove.
 * - Every method honours `signal`. Errors are `BackendError` with the object and the cause.
 */
export interface Backend {
  /** A human-readable location: `/var/backups/q` or `s3://bucket/prefix`. */
  readonly location: string;
  save(type: ObjectType, name: string, data: Uint8Array, options?: CallOptions): Promise<void>;
  load(type: ObjectType, name: string, options?: LoadOptions): Promise<Buffer>;
  stat(type: ObjectType, name: string, options?: CallOptions): Promise<ObjectInfo>;
  list(type: ObjectType, options?: CallOptions): AsyncIterable<ObjectInfo>;
  remove(type: ObjectType, name: string, options?: CallOptions): Promise<void>;
  /** Is there a repository here at all (a `config` object)? */
  exists(options?: CallOptions): Promise<boolean>;
  close(): Promise<void>;
  /**
   * A new object written piece by piece and named only at the end (a pack is named by the hash
   * of all its bytes), so its writer need not hold it whole in memory. Offered by backends that
   * can write in place (a local directory); for the others the caller assembles the object and
   * `save`s it. Committing is as atomic as `save`; an object never committed is never listed.
   */
  createWriter?(type: ObjectType, options?: CallOptions): Promise<ObjectWriter>;
  /**
   * Removes the temporary files of writes that never finished (a process killed while it saved
   * or streamed an object) once they are older than `olderThanMs`; answers how many went and
   * their bytes. Offered by backends that can leave such files (a local directory).
   */
  removeTemporary?(olderThanMs: number, options?: CallOptions): Promise<{ files: number; bytes: number }>;
}

export interface ObjectWriter {
  /** Appends `data`; the caller may reuse it once this settles. */
  write(data: Uint8Array): Promise<void>;
  /** Bytes written so far, read back. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Makes what was written the object `name`, whole or not at all, as `save` does. */
  commit(name: string, options?: CallOptions): Promise<void>;
  /** Throws away what was written (after a failure, or instead of committing); idempotent. */
  abort(): Promise<void>;
}

/**
 * What went wrong, as far as a caller decides anything on it: `not-found` (a missing object),
 * `no-space` (a full disk or a quota: the caller should say so plainly), or `other`.
 */
export type BackendErrorKind = 'not-found' | 'no-space' | 'other';

export class BackendError extends Error {
  readonly kind: BackendErrorKind;
  constructor(message: string, options: { cause?: unknown; kind?: BackendErrorKind } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BackendError';
    this.kind = options.kind ?? 'other';
  }
}
