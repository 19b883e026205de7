// A real file system on a loop device, for tests that need btrfs, XFS with reflink or ext4.
// Needs root and a free loop device; answers { skip } with the reason when it cannot.
import { execFile, execFileSync } from 'node:child_process';
import { access, constants, mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;

function run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { env: { ...process.env, PATH }, encoding: 'utf8' });
}

export type LoopFsKind = 'btrfs' | 'xfs' | 'ext4';

export interface LoopFs {
  kind: LoopFsKind;
  device: string;
  mountPoint: string;
  /** Where tests work: the mount point, or a subvolume `work` of it on btrfs. */
  workDir: string;
  /** Unmounts (thawing first, retrying while busy), detaches the loop device, deletes the image. */
  cleanup(): Promise<void>;
}

const MKFS: Record<LoopFsKind, { command: string; args: string[] }> = {
  xfs: { command: 'mkfs.xfs', args: ['-q', '-f', '-m', 'reflink=1'] },
  btrfs: { command: 'mkfs.btrfs', args: ['-q', '-f'] },
  ext4: { command: 'mkfs.ext4', args: ['-q', '-F'] },
};

/** Loop file systems not cleaned up yet: detached on exit if a test run dies half-way. */
const live = new Map<string, { device: string; mountPoint: string }>();
process.once('exit', () => {
  for (const { device, mountPoint } of live.values()) {
    for (const [file, args] of [
      ['fsfreeze', ['-u', mountPoint]],
      ['umount', ['-l', mountPoint]],
      ['losetup', ['-d', device]],
    ] as const) {
      try {
        execFileSync(file, args, { stdio: 'ignore', env: { ...process.env, PATH } });
      } catch {
        // best effort
      }
    }
  }
});

export interface LoopFsOptions {
  /**
   * The loop device reads and writes its image file with direct I/O, as a disk would, instead
   * of through a second page cache (the image's) under the file system's own. Benchmarks want
   * this: buffered loop devices spend a kernel thread's CPU copying every byte once more.
   */
  directIo?: boolean;
}

export async function makeLoopFs(
  kind: LoopFsKind,
  sizeMiB: number,
  options: LoopFsOptions = {},
): Promise<LoopFs | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: `making a ${kind} loop file system needs root` };
  for (const command of [MKFS[kind].command, 'losetup', 'mount', 'umount', ...(kind === 'btrfs' ? ['btrfs'] : [])]) {
    if (!(await onPath(command))) return { skip: `${command} is not installed` };
  }

  const dir = await mkdtemp(join(tmpdir(), `quiesce-loop-${kind}-`));
  const image = join(dir, 'image');
  const mountPoint = join(dir, 'mnt');
  let device: string | undefined;
  let mounted = false;

  const cleanup = async (): Promise<void> => {
    if (mounted) {
      await run('fsfreeze', ['-u', mountPoint]).catch(() => {}); // in case a test left it frozen
      await unmount(mountPoint);
      mounted = false;
    }
    if (device !== undefined) {
      await run('losetup', ['-d', device]).catch(() => {});
      live.delete(device);
      device = undefined;
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const handle = await open(image, 'w');
    await handle.truncate(sizeMiB * 1024 * 1024);
    await handle.close();
    await mkdir(mountPoint);
    try {
      device = (
        await run('losetup', ['-f', '--show', ...(options.directIo === true ? ['--direct-io=on'] : []), image])
      ).stdout.trim();
    } catch (error) {
      await cleanup();
      return { skip: `no loop device available: ${stderrOf(error)}` };
    }
    live.set(device, { device, mountPoint });
    await run(MKFS[kind].command, [...MKFS[kind].args, device]);
    await run('mount', [device, mountPoint]);
    mounted = true;
    let workDir = mountPoint;
    if (kind === 'btrfs') {
      workDir = join(mountPoint, 'work');
      await run('btrfs', ['subvolume', 'create', workDir]);
    }
    return { kind, device, mountPoint, workDir, cleanup };
  } catch (error) {
    await cleanup();
    return { skip: `cannot make a ${kind} loop file system: ${stderrOf(error)}` };
  }
}

/** Unmounts, retrying for about five seconds while busy, then detaches lazily. */
export async function unmount(mountPoint: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run('umount', [mountPoint]);
      return;
    } catch (error) {
      if (attempt >= 25 || !stderrOf(error).includes('busy')) {
        await run('umount', ['-l', mountPoint]).catch(() => {});
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Whether `command` is an executable on PATH (with the sbin directories root's tools live in). */
export async function onPath(command: string): Promise<boolean> {
  for (const dir of PATH.split(':')) {
    try {
      await access(join(dir, command), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

function stderrOf(error: unknown): string {
  if (error instanceof Error) {
    const stderr = (error as Error & { stderr?: unknown }).stderr;
    return typeof stderr === 'string' && stderr.trim() !== '' ? stderr.trim() : error.message;
  }
  return String(error);
}
