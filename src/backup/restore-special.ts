import { constants } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import type { SpecialNode } from '../repository/index.ts';
import { canMakeNodes, isErrno, makeNode } from '../util/index.ts';

/** An entry the restore did not make, and why (`socket ignored`, as GNU tar says). */
export interface SkippedEntry {
  path: string;
  reason: string;
}

const TYPE_BITS: Record<SpecialNode['type'], number> = {
  fifo: constants.S_IFIFO,
  socket: constants.S_IFSOCK,
  chardev: constants.S_IFCHR,
  blockdev: constants.S_IFBLK,
};

const WHAT: Record<SpecialNode['type'], string> = {
  fifo: 'FIFO',
  socket: 'socket',
  chardev: 'character device',
  blockdev: 'block device',
};

/**
 * Makes a FIFO or a device node as GNU tar does: FIFOs always (mkfifo needs no privilege),
 * devices as root only, with their recorded device number; sockets never (a socket is made by
 * the program that listens on it: "socket ignored"). Returns why it was not made, or null when
 * it was; the caller then sets its owner, mode and times.
 */
export async function makeSpecial(
  node: SpecialNode,
  path: string,
  inFresh: boolean,
  asRoot: boolean,
): Promise<string | null> {
  if (node.type === 'socket') return 'socket ignored';
  const what = WHAT[node.type];
  if (node.type !== 'fifo' && !asRoot) return `${what} not restored: only root can make device nodes`;
  if (!canMakeNodes()) return `${what} not restored: the native addon (build/Release/fs_meta.node) is not built`;
  const existing = inFresh ? null : await lstat(path).catch(() => null);
  if (existing) await rm(path, { recursive: true, force: true });
  const rdev = node.type === 'fifo' ? 0n : BigInt(node.rdev);
  try {
    makeNode(path, TYPE_BITS[node.type] | (node.mode & 0o7777), rdev);
  } catch (error) {
    // No CAP_MKNOD (a container), or a file system that holds no such nodes.
    if (isErrno(error, 'EPERM', 'EOPNOTSUPP', 'EINVAL')) return `${what} not restored: ${(error as Error).message}`;
    throw error;
  }
  return null;
}
