import { lstat, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { providerFailed } from '../provider-error.ts';

/** The inode number of every btrfs subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID). */
const SUBVOLUME_ROOT_INODE = 256;

/**
 * The root directory of the btrfs subvolume holding the existing path `physical` (its parents'
 * symlinks resolved). Each subvolume has its own st_dev, so the root is the topmost directory
 * reached by walking up while st_dev stays the same; it must have inode 256.
 */
export async function subvolumeRoot(physical: string): Promise<string> {
  const start = await lstat(physical);
  let current = physical;
  let currentStats = start;
  while (current !== '/') {
    const parent = dirname(current);
    const parentStats = await stat(parent);
    if (parentStats.dev !== start.dev) break;
    current = parent;
    currentStats = parentStats;
  }
  if (!currentStats.isDirectory() || currentStats.ino !== SUBVOLUME_ROOT_INODE) {
    throw providerFailed(
      `cannot find the btrfs subvolume holding ${physical} (${current} has inode ${currentStats.ino}, not ${SUBVOLUME_ROOT_INODE}); is it on btrfs?`,
    );
  }
  return current;
}
