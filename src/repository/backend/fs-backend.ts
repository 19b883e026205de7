import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { CallOptions } from '../../model/index.ts';
import { isErrno, messageOf } from '../../util/index.ts';
import {
  BackendError,
  OBJECT_TYPES,
  type Backend,
  type LoadOptions,
  type ObjectInfo,
  type ObjectType,
  type ObjectWriter,
} from './backend.ts';
import { CONFIG_NAME, TEMP_PREFIX, describeObject, isObjectName, objectSegments } from './object-path.ts';
import { checkRange } from './range.ts';
import { openDirect, writeAt } from './direct-io.ts';

/** Writes go to disk in slices this big, so an abort takes effect between them. */
const WRITE_SLICE = 4 * 1024 * 1024;

/** What may sit at the top of a repository directory (a partly created one included). */
const LAYOUT = new Set<string>(OBJECT_TYPES);

/**
 * A repository in a local directory: `config`, `keys/<name>`, `data/<first 2 hex>/<name>`,
 * `index/<name>`, `manifests/<name>`, `locks/<name>`.
 *
 * Every save writes a temp file (`.tmp-<random>`) beside its target, fsyncs it, renames it over
 * the target and fsyncs the directory, so a crash at any moment leaves the whole object or none.
 * Locks alone are not synced: a lock matters only while its process lives, and no process
 * outlives a crash of the machine; one left empty or half-written by the crash is unreadable,
 * which lockers ignore and exclusive lockers remove (the two fsyncs took a backup 50-90 ms).
 * Fan-out folders under `data/` are made when first needed.
 *
 * @example
 * const backend = await FsBackend.create('/var/backups/quiesce');
 * await backend.save('config', 'config', bytes);
 * const again = await backend.load('config', 'config');
 */
export class FsBackend implements Backend {
  /** The absolute path of the repository directory. */
  readonly location: string;

  /** A backend over an existing repository directory (nothing is checked or made: see `create`, `exists`). */
  constructor(path: string) {
    this.location = resolve(path);
  }

  /**
   * Makes the repository directory and its folders (mode 0700) and returns a backend over it.
   * Succeeds on an empty or missing directory and on one that already holds (part of) a
   * repository, so an interrupted `create` can be run again; callers that must not reuse a
   * repository check `exists()` first. Fails if the directory holds anything else.
   */
  static async create(path: string, options: CallOptions = {}): Promise<FsBackend> {
    const root = resolve(path);
    options.signal?.throwIfAborted();
    try {
      const made = await mkdir(root, { recursive: true, mode: 0o700 });
      const entries = await readdir(root);
      const foreign = entries.filter((entry) => !LAYOUT.has(entry) && !entry.startsWith(TEMP_PREFIX));
      if (foreign.length > 0) {
        const shown = foreign
          .slice(0, 3)
          .map((entry) => JSON.stringify(entry))
          .join(', ');
        throw new BackendError(
          `cannot create a repository in ${root}: the directory is not empty and is not a quiesce repository ` +
            `(it holds ${shown}${foreign.length > 3 ? ` and ${foreign.length - 3} more` : ''}). Choose an empty or new directory.`,
        );
      }
      for (const type of OBJECT_TYPES) {
        if (type === 'config') continue;
        options.signal?.throwIfAborted();
        await mkdir(join(root, type), { mode: 0o700 }).catch((error: unknown) => {
          if (!isErrno(error, 'EEXIST')) throw error;
        });
      }
      await syncDirectory(root);
      if (made !== undefined) await syncDirectory(dirname(made));
    } catch (error) {
      if (error instanceof BackendError) throw error;
      if (options.signal?.aborted) throw options.signal.reason;
      if (isErrno(error, 'ENOSPC', 'EDQUOT')) {
        throw new BackendError(
          `cannot create a repository in ${root}: the disk is full (or a quota is used up). Free some space and try again.`,
          {
            cause: error,
            kind: 'no-space',
          },
        );
      }
      if (isErrno(error, 'EEXIST', 'ENOTDIR')) {
        throw new BackendError(`cannot create a repository in ${root}: it is not a directory`, { cause: error });
      }
      throw new BackendError(`cannot create a repository in ${root}: ${messageOf(error)}`, { cause: error });
    }
    return new FsBackend(root);
  }

  async save(type: ObjectType, name: string, data: Uint8Array, options: CallOptions = {}): Promise<void> {
    const { signal } = options;
    const target = this.pathOf(type, name);
    signal?.throwIfAborted();
    const dir = dirname(target);
    const durable = type !== 'locks';
    const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    let handle: FileHandle | undefined;
    try {
      handle = await this.openTemp(temp);
      for (let offset = 0; offset < data.length;) {
        signal?.throwIfAborted();
        const { bytesWritten } = await handle.write(data, offset, Math.min(WRITE_SLICE, data.length - offset), offset);
        offset += bytesWritten;
      }
      if (durable) await handle.sync();
      await handle.close();
      handle = undefined;
      // The last moment a cancel can take effect: after the rename the object is there.
      signal?.throwIfAborted();
      await rename(temp, target);
    } catch (error) {
      await handle?.close().catch(() => {});
      await rm(temp, { force: true }).catch(() => {});
      throw this.failure(error, 'save', type, name, signal);
    }
    try {
      if (durable) await syncDirectory(dir);
    } catch (error) {
      throw this.failure(error, 'save', type, name, undefined);
    }
  }

  async load(type: ObjectType, name: string, options: LoadOptions = {}): Promise<Buffer> {
    const { signal } = options;
    const path = this.pathOf(type, name);
    const range = checkRange(options, describeObject(type, name));
    signal?.throwIfAborted();
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, 'r');
      if (range === undefined) return await handle.readFile(signal === undefined ? {} : { signal });
      const given = options.into?.(range.length);
      const buffer =
        given === undefined
          ? Buffer.allocUnsafe(range.length)
          : Buffer.from(given.buffer, given.byteOffset, range.length);
      let done = 0;
      while (done < range.length) {
        signal?.throwIfAborted();
        const { bytesRead } = await handle.read(buffer, done, range.length - done, range.offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      const size = done < range.length || range.length === 0 ? (await handle.stat()).size : undefined;
      if (size !== undefined && (done < range.length || range.offset > size)) {
        throw new BackendError(
          `load ${describeObject(type, name)} from ${this.location}: short read, wanted ${range.length} bytes at offset ${range.offset} ` +
            `but the object has ${size} bytes`,
        );
      }
      return buffer;
    } catch (error) {
      throw this.failure(error, 'load', type, name, signal);
    } finally {
      await handle?.close().catch(() => {});
    }
  }

  async stat(type: ObjectType, name: string, options: CallOptions = {}): Promise<ObjectInfo> {
    const path = this.pathOf(type, name);
    options.signal?.throwIfAborted();
    try {
      const info = await lstat(path);
      if (!info.isFile())
        throw new BackendError(`stat ${describeObject(type, name)} in ${this.location}: not a regular file`);
      return { name, size: info.size };
    } catch (error) {
      throw this.failure(error, 'stat', type, name, options.signal);
    }
  }

  async *list(type: ObjectType, options: CallOptions = {}): AsyncGenerator<ObjectInfo> {
    const { signal } = options;
    signal?.throwIfAborted();
    if (type === 'config') {
      const info = await this.statIfPresent(join(this.location, CONFIG_NAME), type, signal);
      if (info !== undefined) yield { name: CONFIG_NAME, size: info };
      return;
    }
    for (const dir of await this.folders(type, signal)) {
      for (const entry of await this.readDir(dir, type, signal)) {
        if (entry.startsWith(TEMP_PREFIX) || !isObjectName(type, entry)) continue;
        if (type === 'data' && !dir.endsWith(`/${entry.slice(0, 2)}`)) continue;
        signal?.throwIfAborted();
        const size = await this.statIfPresent(join(dir, entry), type, signal);
        if (size !== undefined) yield { name: entry, size };
      }
    }
  }

  async remove(type: ObjectType, name: string, options: CallOptions = {}): Promise<void> {
    const path = this.pathOf(type, name);
    options.signal?.throwIfAborted();
    try {
      await unlink(path);
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return;
      throw this.failure(error, 'remove', type, name, options.signal);
    }
  }

  async exists(options: CallOptions = {}): Promise<boolean> {
    options.signal?.throwIfAborted();
    try {
      return (await lstat(join(this.location, CONFIG_NAME))).isFile();
    } catch (error) {
      if (isErrno(error, 'ENOENT', 'ENOTDIR')) return false;
      throw new BackendError(`cannot tell whether ${this.location} holds a repository: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }

  async close(): Promise<void> {}

  async removeTemporary(olderThanMs: number, options: CallOptions = {}): Promise<{ files: number; bytes: number }> {
    const removed = { files: 0, bytes: 0 };
    const cutoff = Date.now() - olderThanMs;
    const dirs = [this.location];
    for (const type of OBJECT_TYPES) {
      if (type === 'config') continue;
      // The type's folder too: a streamed object's temporary file is there, beside the fan-out.
      if (type === 'data') dirs.push(join(this.location, type));
      dirs.push(...(await this.folders(type, options.signal)));
    }
    for (const dir of dirs) {
      for (const entry of await this.readDir(dir, 'data', options.signal)) {
        if (!entry.startsWith(TEMP_PREFIX)) continue;
        options.signal?.throwIfAborted();
        const path = join(dir, entry);
        const info = await lstat(path).catch(() => null);
        if (info === null || !info.isFile() || info.mtimeMs >= cutoff) continue;
        try {
          await unlink(path);
          removed.files += 1;
          removed.bytes += info.size;
        } catch (error) {
          if (!isErrno(error, 'ENOENT')) throw this.failure(error, 'remove', 'data', undefined, options.signal);
        }
      }
    }
    return removed;
  }

  async createWriter(type: ObjectType, options: CallOptions = {}): Promise<ObjectWriter> {
    options.signal?.throwIfAborted();
    // At the top of the type's folder, beside the fan-out folders: never listed (see `list`).
    const temp = join(this.location, type, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    let handle: FileHandle | undefined;
    try {
      handle = await this.openTemp(temp, 'wx+'); // read too: blobs of a pack not committed yet are read back
    } catch (error) {
      throw this.failure(error, 'save', type, undefined, options.signal);
    }
    const file = handle;
    // Aligned pieces go to the disk directly, past the page cache (see direct-io.ts).
    let direct = await openDirect(temp);
    const closeDirect = async (): Promise<void> => {
      const closing = direct;
      direct = null;
      await closing?.close().catch(() => {});
    };
    let size = 0;
    let done = false;
    let committed: string | undefined;
    const abort = async (): Promise<void> => {
      if (done) return;
      done = true;
      await closeDirect();
      await file.close().catch(() => {});
      await rm(temp, { force: true }).catch(() => {});
    };
    return {
      write: async (data) => {
        if (done) throw new BackendError(`the new ${type} object in ${this.location} is already committed or dropped`);
        try {
          if (!(await writeAt(direct, file, data, size))) await closeDirect();
          size += data.length;
        } catch (error) {
          throw this.failure(error, 'save', type, undefined, undefined);
        }
      },
      read: async (offset, length) => {
        checkRange({ offset, length }, `the new ${type} object`);
        if (offset + length > size)
          throw new BackendError(
            `the new ${type} object in ${this.location} has only ${size} bytes written, not ${offset + length}`,
          );
        // Once committed, it is read as the object it became.
        if (committed !== undefined) return this.load(type, committed, { offset, length });
        const buffer = Buffer.allocUnsafe(length);
        for (let got = 0; got < length;) {
          const { bytesRead } = await file.read(buffer, got, length - got, offset + got);
          if (bytesRead === 0) throw new BackendError(`the new ${type} object in ${this.location} ends early`);
          got += bytesRead;
        }
        return buffer;
      },
      commit: async (name, commitOptions = {}) => {
        if (done) throw new BackendError(`the new ${type} object in ${this.location} is already committed or dropped`);
        const target = this.pathOf(type, name);
        try {
          commitOptions.signal?.throwIfAborted();
          await closeDirect();
          // One sync of the file makes all of it durable, whichever handle wrote it.
          await file.sync();
          done = true;
          try {
            await rename(temp, target);
          } catch (error) {
            if (!isErrno(error, 'ENOENT')) throw error;
            await this.makeDirectory(dirname(target)); // a fan-out folder not made yet
            await rename(temp, target);
          }
          committed = name;
          await file.close();
          await syncDirectory(dirname(target));
        } catch (error) {
          await closeDirect();
          await file.close().catch(() => {});
          await rm(temp, { force: true }).catch(() => {});
          done = true;
          throw this.failure(error, 'save', type, name, commitOptions.signal);
        }
      },
      abort,
    };
  }

  /** The folders that hold a type's objects: its fan-out folders for `data`, else its own folder. */
  private async folders(type: Exclude<ObjectType, 'config'>, signal: AbortSignal | undefined): Promise<string[]> {
    const base = join(this.location, type);
    if (type !== 'data') return [base];
    return (await this.readDir(base, type, signal)).filter((d) => /^[0-9a-f]{2}$/.test(d)).map((d) => join(base, d));
  }

  private pathOf(type: ObjectType, name: string): string {
    return join(this.location, ...objectSegments(type, name));
  }

  /** Opens a new temp file, making its folder (and the folder's parents inside the repository) if missing. */
  private async openTemp(temp: string, flags: 'wx' | 'wx+' = 'wx'): Promise<FileHandle> {
    try {
      return await open(temp, flags, 0o600);
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) throw error;
    }
    await this.makeDirectory(dirname(temp));
    return await open(temp, flags, 0o600);
  }

  private async makeDirectory(dir: string): Promise<void> {
    if (dir === this.location || !dir.startsWith(`${this.location}/`)) {
      throw new BackendError(`the repository directory ${this.location} is missing: was it moved or unmounted?`);
    }
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (error) {
      if (isErrno(error, 'EEXIST')) return;
      if (!isErrno(error, 'ENOENT')) throw error;
      await this.makeDirectory(dirname(dir));
      await mkdir(dir, { mode: 0o700 }).catch((again: unknown) => {
        if (!isErrno(again, 'EEXIST')) throw again;
      });
    }
    // The new folder's entry in its parent must be durable before anything renamed into it is.
    await syncDirectory(dirname(dir));
  }

  private async readDir(dir: string, type: ObjectType, signal: AbortSignal | undefined): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return [];
      throw this.failure(error, 'list', type, undefined, signal);
    }
  }

  /** The size of a regular file, or undefined if it is gone (removed while listing) or not a file. */
  private async statIfPresent(
    path: string,
    type: ObjectType,
    signal: AbortSignal | undefined,
  ): Promise<number | undefined> {
    try {
      const info = await lstat(path);
      return info.isFile() ? info.size : undefined;
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return undefined;
      throw this.failure(error, 'list', type, undefined, signal);
    }
  }

  /** Any error as what the contract promises: the abort reason, or a `BackendError` naming the object. */
  private failure(
    error: unknown,
    doing: 'save' | 'load' | 'stat' | 'list' | 'remove',
    type: ObjectType,
    name: string | undefined,
    signal: AbortSignal | undefined,
  ): unknown {
    if (signal?.aborted) return signal.reason;
    if (error instanceof BackendError) return error;
    const object = name === undefined ? `${type} objects` : describeObject(type, name);
    if (isErrno(error, 'ENOSPC', 'EDQUOT')) {
      return new BackendError(
        `cannot ${doing} ${object} in ${this.location}: the disk is full${isErrno(error, 'EDQUOT') ? ' (the disk quota is used up)' : ''}. ` +
          'Nothing saved before was lost and no partial object was left; free some space (or prune old backups) and try again.',
        { cause: error, kind: 'no-space' },
      );
    }
    if (isErrno(error, 'ENOENT') && (doing === 'load' || doing === 'stat')) {
      return new BackendError(`${object} not found in ${this.location}`, { cause: error, kind: 'not-found' });
    }
    return new BackendError(`cannot ${doing} ${object} in ${this.location}: ${messageOf(error)}`, { cause: error });
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
