// Disk images of test guests: the loop devices behind an image file, a frozen one's rescue, and
// mounting a copy of an image (a restored or snapshotted disk) to check the bank in it.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBank, type BankCheck } from '../../../src/cli/demo/bank.ts';
import { unmount } from '../loop-fs.ts';
import { liveImageMounts } from './crash-cleanup.ts';
import { errorText, run } from './process.ts';

/** Loop devices backed by `file`, or [] (losetup -j). */
export async function loopDevicesOf(file: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-j', file]).catch(() => ({ stdout: '' }));
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => line.slice(0, line.indexOf(':')));
}

/** A disk frozen when its namespace died stays frozen, unmounted, holding its loop device:
 * mount the device again (that finds the same superblock), thaw it, unmount it. */
export async function rescueFrozenLoop(device: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-guest-rescue-'));
  try {
    await run('mount', [device, dir], 10_000);
    await run('fsfreeze', ['-u', dir]).catch(() => {});
    await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
  } catch {
    // best effort: the caller reports the device if it stays
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface MountedImage {
  /** Where the copy is mounted (read-write, so that ext4 replays its journal). */
  dir: string;
  device: string;
  /** Unmounts, detaches, deletes the copy. Idempotent. */
  cleanup(): Promise<void>;
}

/** Mounts a copy of a disk image (a restored or snapshotted one; the original is never touched). */
export async function mountImage(image: string): Promise<MountedImage> {
  const tempDir = await mkdtemp(join(tmpdir(), 'quiesce-guest-image-'));
  const copy = join(tempDir, 'image');
  const dir = join(tempDir, 'mnt');
  const entry = { dir, device: null as string | null, tempDir };
  liveImageMounts.set(tempDir, entry);
  let mounted = false;
  let cleaned: Promise<void> | null = null;
  const cleanup = (): Promise<void> => {
    cleaned ??= (async () => {
      if (mounted) await unmount(dir);
      if (entry.device !== null) await run('losetup', ['-d', entry.device]).catch(() => {});
      await rm(tempDir, { recursive: true, force: true });
      liveImageMounts.delete(tempDir);
    })();
    return cleaned;
  };
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', image, copy]);
    await mkdir(dir);
    entry.device = (await run('losetup', ['-f', '--show', copy])).stdout.trim();
    await run('mount', [entry.device, dir]);
    mounted = true;
    return { dir, device: entry.device, cleanup };
  } catch (error) {
    await cleanup();
    throw new Error(`cannot mount a copy of ${image}: ${errorText(error)}`);
  }
}

/** Checks the bank in a disk image (a stopped guest's, a restored or snapshotted one). */
export async function checkImageBank(image: string): Promise<BankCheck> {
  const mounted = await mountImage(image);
  try {
    const bank = join(mounted.dir, 'bank.db');
    if (!existsSync(bank)) throw new Error(`${image} has no bank.db`);
    return await checkBank(bank);
  } finally {
    await mounted.cleanup();
  }
}
