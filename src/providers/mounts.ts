import { readFile, lstat, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { CallOptions } from '../model/index.ts';
import { isErrno } from '../util/index.ts';

/** One line of /proc/self/mountinfo. */
export interface Mount {
  /** Where it is mounted, as seen by this process. */
  mountPoint: string;
  fsType: string;
  source: string;
  /** `major:minor` of the file system (the superblock): equal for two mounts of one file system. */
  device: string;
  readOnly: boolean;
}

/** Parses /proc/self/mountinfo, in mount order (later mounts over earlier ones). */
export async function readMounts(options: CallOptions = {}): Promise<Mount[]> {
  const text = await readFile('/proc/self/mountinfo', { encoding: 'utf8', signal: options.signal });
  return parseMountInfo(text);
}

export function parseMountInfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    const device = fields[2];
    const mountPoint = fields[4];
    const mountOptions = fields[5];
    const fsType = fields[separator + 1];
    const source = fields[separator + 2];
    if (separator < 0 || device === undefined || mountPoint === undefined || fsType === undefined) continue;
    mounts.push({
      mountPoint: unescapeMountField(mountPoint),
      fsType,
      source: unescapeMountField(source ?? ''),
      device,
      readOnly: (mountOptions ?? '').split(',').includes('ro'),
    });
  }
  return mounts;
}

/** mountinfo writes space, tab, newline and backslash as octal escapes. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The mount holding `physical` (a path from `physicalPath`): the longest mount point that contains it. */
export function mountOf(physical: string, mounts: readonly Mount[]): Mount {
  let best: Mount | undefined;
  for (const mount of mounts) {
    if (!contains(mount.mountPoint, physical)) continue;
    if (best === undefined || mount.mountPoint.length >= best.mountPoint.length) best = mount;
  }
  if (best === undefined) throw new Error(`no mount holds ${physical} (is /proc mounted?)`);
  return best;
}

/** The mount holding `path`, which need not exist (its nearest existing ancestor decides). */
export async function findMount(path: string, options: CallOptions = {}): Promise<Mount> {
  const [physical, mounts] = await Promise.all([physicalPath(path), readMounts(options)]);
  return mountOf(physical, mounts);
}

/** Mount points strictly below `dir`: a tree walk that stays on one file system stops at them. */
export function mountPointsBelow(dir: string, mounts: readonly Mount[]): Set<string> {
  return new Set(mounts.map((m) => m.mountPoint).filter((m) => m !== dir && contains(dir, m)));
}

/** Whether `path` is `dir` or lies below it (both absolute and normalised). */
export function contains(dir: string, path: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/**
 * The path with every symlink in its parent directories resolved, but not the last component
 * (a symlink is captured as a symlink). Missing components are kept as written.
 */
export async function physicalPath(path: string): Promise<string> {
  const absolute = resolve(path);
  if (absolute === '/') return '/';
  return join(await canonicalPath(dirname(absolute)), basename(absolute));
}

/** The path with every symlink resolved; missing components are kept as written. */
export async function canonicalPath(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await realpath(absolute);
  } catch (error) {
    if (!isErrno(error, 'ENOENT', 'ENOTDIR') || absolute === '/') throw error;
    return join(await canonicalPath(dirname(absolute)), basename(absolute));
  }
}

/** Whether anything (a file, a directory, a dangling symlink) is at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return false;
    throw error;
  }
}

/** `path` itself if it exists, else its nearest existing ancestor. */
export async function nearestExisting(path: string): Promise<string> {
  let current = resolve(path);
  for (;;) {
    try {
      await lstat(current);
      return current;
    } catch (error) {
      if (!isErrno(error, 'ENOENT', 'ENOTDIR') || current === '/') throw error;
      current = dirname(current);
    }
  }
}
