import type { BigIntStats } from 'node:fs';
import { link, lstat, rename, rm, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { FileNode } from '../repository/index.ts';
import { deferred, isErrno, type Deferred } from '../util/index.ts';

/**
 * Hard links in a backup and a restore. The backup gives every name of a multiply-linked file
 * the same `hardlink` (`<device>:<inode>` as read), stores its content once, and the later names
 * share the first one's content refs; the restore writes the first name it meets and makes the
 * others `link()`s to it (as restic's restorer keeps a hardlinks index), so they come back as one
 * inode with as many names.
 */

/** A file's hard-link identity, or undefined when it has one name. */
export function hardLinkOf(stats: BigIntStats): string | undefined {
  return stats.nlink > 1n ? `${stats.dev}:${stats.ino}` : undefined;
}

/** The first name of each multiply-linked file archived so far: its node and when its content is stored. */
export class HardLinkArchive {
  readonly #first = new Map<string, Promise<{ node: FileNode; done: Promise<void> }>>();

  /** `laterName`: called for each name after the first (a file more in the totals). */
  constructor(private readonly laterName: () => void) {}

  /**
   * The node of one name of a multiply-linked file: the first archives it (`archiveFile`, its
   * saves' promises into the waits it is given), the later ones take its content as it is, and
   * wait for its saves in `waits` as their own.
   */
  async node(
    identity: string,
    base: Omit<FileNode, 'type' | 'size' | 'content'>,
    waits: Promise<void>[],
    archiveFile: (waits: Promise<void>[]) => Promise<FileNode>,
  ): Promise<FileNode> {
    const first = this.#first.get(identity);
    if (first !== undefined) {
      const { node, done } = await first;
      waits.push(done);
      this.laterName();
      return { ...base, type: 'file', size: node.size, content: node.content, hardlink: identity };
    }
    const own: Promise<void>[] = [];
    const archived = archiveFile(own).then((node) => ({
      node: { ...node, hardlink: identity },
      done: Promise.all(own).then(() => undefined),
    }));
    this.#first.set(identity, archived);
    const { node, done } = await archived;
    waits.push(done);
    return node;
  }
}

/** The first restored name of each multiply-linked file: its path, or null when it failed. */
export class HardLinkRestore {
  readonly #first = new Map<string, Deferred<string | null>>();

  /**
   * Restores one file node: the first name of a link group (or a file of one name) through
   * `restoreFile` (true when restored), a later name as a link to the first, or through
   * `restoreFile` too when the first failed (the later names then link to this one) or cannot
   * be linked to. True when linked.
   */
  async restore(node: FileNode, path: string, inFresh: boolean, restoreFile: () => Promise<boolean>): Promise<boolean> {
    if (node.hardlink === undefined) {
      await restoreFile();
      return false;
    }
    const first = this.#first.get(node.hardlink);
    if (first !== undefined) {
      const firstPath = await first.promise;
      if (firstPath !== null) {
        if (await linkInPlace(firstPath, path, node.name, inFresh)) return true;
        await restoreFile(); // cannot be linked to: a copy of its own
        return false;
      }
    }
    // The first name, or the first failed: this one is written, and the next names link to it.
    const made = deferred<string | null>();
    this.#first.set(node.hardlink, made);
    try {
      made.resolve((await restoreFile()) ? path : null);
    } catch (error) {
      made.resolve(null);
      throw error;
    }
    return false;
  }
}

/** Links `path` to `existing` by way of a temporary name (whatever is at `path` is replaced); false when it cannot be. */
async function linkInPlace(existing: string, path: string, name: string, inFresh: boolean): Promise<boolean> {
  const temp = join(path, '..', `.${name.slice(0, 200)}.quiesce-restore-${randomBytes(4).toString('hex')}`);
  try {
    await link(existing, temp);
  } catch (error) {
    // Another file system below the target, a file system without links, too many links: a copy then.
    if (isErrno(error, 'EXDEV', 'EPERM', 'EMLINK', 'ENOENT', 'EOPNOTSUPP')) return false;
    throw error;
  }
  try {
    const inTheWay = inFresh ? null : await lstat(path).catch(() => null);
    if (inTheWay?.isDirectory()) await rm(path, { recursive: true, force: true });
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  return true;
}
