// A test "host": a loop volume (XFS or btrfs) holding the guests' disk images, and its guests.
// Needs root, iproute2 (`ip`), util-linux (`unshare`, `nsenter`, `losetup`, `mount`, `fsfreeze`)
// and mkfs.ext4; makeGuestHost answers { skip } with the reason when something is missing.
import { rmdir } from 'node:fs/promises';
import { makeLoopFs, onPath, type LoopFs } from '../loop-fs.ts';
import { liveVolumes } from './crash-cleanup.ts';
import { Guest, type StartGuestOptions, type TestGuest } from './guest.ts';
import { errorText, run } from './process.ts';
import { RUN_BASE, SUBNET_LOCKS } from './subnets.ts';

export interface GuestHostOptions {
  fs: 'xfs' | 'btrfs';
  /** Size of the (sparse) host volume; default 4096 MiB. */
  sizeMiB?: number;
}

export interface GuestHost {
  fs: 'xfs' | 'btrfs';
  /** The host volume; guests' images are files in `volume.workDir`. */
  volume: LoopFs;
  guests: readonly TestGuest[];
  startGuest(options: StartGuestOptions): Promise<TestGuest>;
  /** Stops every guest and removes the host volume. Idempotent. */
  cleanup(): Promise<void>;
}

export async function makeGuestHost(options: GuestHostOptions): Promise<GuestHost | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: 'test guests need root (network and mount namespaces, loop devices)' };
  for (const command of ['ip', 'unshare', 'nsenter', 'mount', 'umount', 'losetup', 'fsfreeze', 'mkfs.ext4']) {
    if (!(await onPath(command))) return { skip: `${command} is not installed` };
  }
  try {
    await run('unshare', ['--net', '--mount', '--', 'true']);
  } catch (error) {
    return { skip: `cannot make network and mount namespaces: ${errorText(error)}` };
  }
  const volume = await makeLoopFs(options.fs, options.sizeMiB ?? 4096);
  if ('skip' in volume) return volume;
  liveVolumes.set(volume.mountPoint, volume);

  const guests: Guest[] = [];
  let cleaned: Promise<void> | null = null;
  const host: GuestHost = {
    fs: options.fs,
    volume,
    guests,
    async startGuest(guestOptions) {
      if (cleaned !== null) throw new Error('this guest host was cleaned up');
      if (!/^[a-z0-9][a-z0-9-]*$/i.test(guestOptions.name)) throw new Error(`bad guest name ${guestOptions.name}`);
      if (guests.some((g) => g.name === guestOptions.name && !g.stopped))
        throw new Error(`guest ${guestOptions.name} is running already`);
      const guest = await Guest.start(volume, guestOptions);
      guests.push(guest);
      return guest;
    },
    cleanup() {
      cleaned ??= (async () => {
        await run('fsfreeze', ['-u', volume.mountPoint]).catch(() => {}); // a test may have left it frozen
        const results = await Promise.allSettled(guests.map((g) => g.stop()));
        for (const guest of guests) await guest.releaseSubnet();
        await volume.cleanup();
        liveVolumes.delete(volume.mountPoint);
        await rmdir(SUBNET_LOCKS).catch(() => {});
        await rmdir(RUN_BASE).catch(() => {});
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed.length > 0) throw new Error(failed.map((r) => errorText(r.reason)).join('; '));
      })();
      return cleaned;
    },
  };
  return host;
}
