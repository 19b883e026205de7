// Best-effort cleanup when a test run dies half-way: what this process has live (guests, host
// volumes, mounted image copies, subnets) is thawed, killed, unmounted and removed on exit.
import { rmdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { LoopFs } from '../loop-fs.ts';
import { syncQuiet } from './process.ts';
import { claimedSubnets, releaseSubnetSync, RUN_BASE, SUBNET_LOCKS } from './subnets.ts';

export interface LiveGuest {
  netns: string;
  hostLink: string;
  mountPoint: string;
  runDir: string;
  mainPid: () => number | null;
}
export const liveGuests = new Map<string, LiveGuest>();
export const liveVolumes = new Map<string, LoopFs>();
export const liveImageMounts = new Map<string, { dir: string; device: string | null; tempDir: string }>();

// Prepended, so that it runs before loop-fs.ts's handler removes the host volume under the guests.
process.prependOnceListener('exit', () => {
  for (const volume of liveVolumes.values()) syncQuiet('fsfreeze', ['-u', volume.mountPoint]);
  for (const guest of liveGuests.values()) {
    // Thaw first: a process writing to a frozen disk cannot be killed. The disk is mounted in the
    // guest's mount namespace only, reachable through /proc/<pid>/root of any process in it.
    const pids = syncQuiet('ip', ['netns', 'pids', guest.netns]).split(/\s+/).filter(Boolean);
    const main = guest.mainPid();
    // (Through each: after the first thaw the others fail harmlessly.)
    for (const pid of main === null ? pids : [String(main), ...pids])
      syncQuiet('fsfreeze', ['-u', `/proc/${pid}/root${guest.mountPoint}`]);
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    syncQuiet('ip', ['link', 'del', guest.hostLink]);
    syncQuiet('ip', ['netns', 'del', guest.netns]);
    rmSync(guest.runDir, { recursive: true, force: true });
  }
  for (const subnet of claimedSubnets.values()) releaseSubnetSync(subnet);
  // loop-fs.ts's own handler unmounts and detaches too, but leaves the (sparse, GBs) image behind.
  for (const volume of liveVolumes.values()) {
    syncQuiet('umount', ['-l', volume.mountPoint]);
    syncQuiet('losetup', ['-d', volume.device]);
    rmSync(dirname(volume.mountPoint), { recursive: true, force: true });
  }
  for (const dir of [SUBNET_LOCKS, RUN_BASE]) {
    try {
      rmdirSync(dir);
    } catch {
      // not empty: another test process's guests
    }
  }
  for (const mount of liveImageMounts.values()) {
    syncQuiet('umount', ['-l', mount.dir]);
    if (mount.device !== null) syncQuiet('losetup', ['-d', mount.device]);
    rmSync(mount.tempDir, { recursive: true, force: true });
  }
});
