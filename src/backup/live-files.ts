// Files read in place: no snapshot holds them (a plain path read after thaw), so they may change
// size or go between their listing and their read. They are stored as read, or left out of their
// directory if gone, and counted; a file that changes in a snapshot is a broken snapshot instead.
import { lstat } from 'node:fs/promises';
import { rawPath } from '../model/index.ts';
import type { FileNode, TreeNode } from '../repository/index.ts';
import { isErrno } from '../util/index.ts';
import type { FileSaver, PendingContent } from './file-saver.ts';

export class LiveFiles {
  /** Files that went before they could be read: not in their directory's tree. */
  readonly #vanished = new WeakSet<TreeNode>();

  constructor(
    private readonly saver: FileSaver,
    /** Called once for each file that changed or went while read. */
    private readonly onChanged: () => void,
  ) {}

  /** Reads a file in place up to `size` bytes or its end, whichever comes first; null if it is gone. */
  read(path: string, size: number, original: string, likelyNew: boolean): Promise<PendingContent | null> {
    return this.saver.readAndStore(path, 0, size, original, likelyNew, true).catch((error: unknown) => {
      // The saver names the file in its error; the errno is the cause's.
      if (isErrno((error as { cause?: unknown }).cause, 'ENOENT')) return null;
      throw error;
    });
  }

  /**
   * A small file whose read failed (it changed size or went since it was listed): read again
   * whole as it is now, into `node`, or `node` left out of its directory if the file is gone.
   */
  async reread(path: string, original: string, node: FileNode): Promise<void> {
    this.onChanged();
    const stats = await lstat(rawPath(path), { bigint: true }).catch((error: unknown) => {
      if (isErrno(error, 'ENOENT')) return null;
      throw error;
    });
    const read = stats?.isFile() ? await this.read(path, Number(stats.size), original, true) : null;
    if (stats === null || read === null) {
      this.#vanished.add(node);
      return;
    }
    await read.done;
    Object.assign(node, { size: read.length, content: read.refs, mtimeNs: stats.mtimeNs.toString() });
  }

  /** The node of a file that went between its listing and its read: left out of its directory. */
  vanished(node: FileNode): FileNode {
    this.onChanged();
    this.#vanished.add(node);
    return node;
  }

  /** Whether a directory's entry is one of them that went. */
  isGone(node: TreeNode): boolean {
    return this.#vanished.has(node);
  }
}
