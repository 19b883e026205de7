import { lstatSync } from 'node:fs';
import { lstat } from 'node:fs/promises';

// The snapshot stores quiesce's providers make are `<root>/.quiesce-snapshots`, at the root of a
// file system (reflink, fsfreeze staging) or of a btrfs subvolume. A directory of that name
// anywhere else is the user's: only the store itself is skipped, known by where it is.

/** The `..` of a directory path, as bytes or text like the path. */
function parentOf(dir: string | Buffer): string | Buffer {
  if (typeof dir === 'string') return dir.endsWith('/') ? `${dir}..` : `${dir}/..`;
  return Buffer.concat([dir, Buffer.from(dir[dir.length - 1] === 0x2f ? '..' : '/..')]);
}

/**
 * Is `dir` the root of a file system or of a btrfs subvolume: its `..` on another device, or
 * `..` itself (at `/`)? False when it cannot be read (it vanished: nothing to skip).
 */
export async function isFileSystemRoot(dir: string | Buffer): Promise<boolean> {
  try {
    const [own, up] = await Promise.all([lstat(dir, { bigint: true }), lstat(parentOf(dir), { bigint: true })]);
    return own.dev !== up.dev || own.ino === up.ino;
  } catch {
    return false;
  }
}

/** `isFileSystemRoot`, on this thread. */
export function isFileSystemRootNow(dir: string | Buffer): boolean {
  try {
    const own = lstatSync(dir, { bigint: true });
    const up = lstatSync(parentOf(dir), { bigint: true });
    return own.dev !== up.dev || own.ino === up.ino;
  } catch {
    return false;
  }
}
