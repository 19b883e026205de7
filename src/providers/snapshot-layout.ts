import { lstat, mkdir, readdir, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import type { LeftoverSnapshot, ProviderName, ProviderSnapshot, SnapshotPath, UnchangedFile } from '../model/index.ts';
import { copyTree, removeTree, type CopyTreeOptions } from './fs-tree.ts';
import { contains, exists, physicalPath } from './mounts.ts';
import { isErrno } from '../util/index.ts';
import { providerFailed, providerOperation } from './provider-error.ts';

/** The directory, at a file system's root, that holds the snapshots quiesce makes on it. */
export const SNAPSHOT_STORE = '.quiesce-snapshots';

/** An original path and the same path with the symlinks of its parents resolved. */
export interface ResolvedPath {
  original: string;
  physical: string;
}

export async function resolvePaths(paths: readonly string[]): Promise<ResolvedPath[]> {
  return Promise.all(paths.map(async (original) => ({ original, physical: await physicalPath(original) })));
}

/**
 * Where a copy-based snapshot keeps `physical`: `<setDir>/root/<physical>`, so every original
 * maps to one path and nested originals share their copy.
 */
export function layoutPath(setDir: string, physical: string): string {
  return join(setDir, 'root', physical);
}

/** The paths not inside another of them: copying those covers all. */
export function outermost(paths: readonly string[]): string[] {
  const unique = [...new Set(paths)].sort();
  return unique.filter((path) => !unique.some((other) => other !== path && contains(other, path)));
}

/**
 * Creates the set directory `setDir` (its parent is created when missing). Fails clearly when
 * the set directory exists: another snapshot of that set id is still kept there.
 */
export async function createSetDir(setDir: string): Promise<void> {
  await mkdir(dirname(setDir), { recursive: true, mode: 0o700 });
  try {
    await mkdir(setDir, { mode: 0o700 });
  } catch (error) {
    if (isErrno(error, 'EEXIST')) {
      throw providerFailed(
        `a snapshot of set "${basename(setDir)}" already exists at ${setDir}; release it first or use another set id.`,
        error,
      );
    }
    throw error;
  }
}

/**
 * Copies every path into `setDir` in the layout of `layoutPath` and answers where each original
 * that existed can be read, and which files were left out as unchanged (see `CopyTreeOptions.known`).
 * Originals that did not exist are omitted.
 */
export async function copyIntoSet(
  setDir: string,
  paths: readonly ResolvedPath[],
  options: Omit<CopyTreeOptions, 'original' | 'unchanged'>,
): Promise<{ paths: SnapshotPath[]; unchanged: UnchangedFile[] }> {
  const unchanged: UnchangedFile[] = [];
  for (const root of outermost(paths.map((p) => p.physical))) {
    const target = layoutPath(setDir, root);
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    // The known files are the requester's, named by its original paths: the root's own one.
    const original = paths.find((p) => p.physical === root)?.original ?? root;
    await copyTree(root, target, { ...options, original, unchanged });
  }
  const result: SnapshotPath[] = [];
  for (const { original, physical } of paths) {
    const snapshot = layoutPath(setDir, physical);
    if (await exists(snapshot)) result.push({ original, snapshot });
  }
  return { paths: result, unchanged };
}

/** Removes a set directory, then its store directory when that is left empty. */
export async function removeSetDir(
  setDir: string,
  options: { removeEmptyParent: boolean; signal?: AbortSignal },
): Promise<void> {
  await removeTree(setDir, options);
  if (!options.removeEmptyParent) return;
  try {
    await rmdir(dirname(setDir));
  } catch (error) {
    if (!isErrno(error, 'ENOENT', 'ENOTEMPTY', 'EEXIST', 'EBUSY')) throw error;
  }
}

const SetDirsHandleSchema = z.object({ setDirs: z.array(z.string().startsWith('/')) });

/** The handle of a copy-based snapshot: the set directories it created. */
export function setDirsHandle(setDirs: string[]): z.infer<typeof SetDirsHandleSchema> {
  return { setDirs };
}

/** The set directories of a handle, refusing any that is not named after the set (a corrupt or foreign handle). */
export function parseSetDirsHandle(provider: string, setId: string, handle: unknown): string[] {
  const parsed = SetDirsHandleSchema.safeParse(handle);
  if (!parsed.success || parsed.data.setDirs.some((dir) => basename(dir) !== setId)) {
    throw providerFailed(
      `the ${provider} snapshot handle of set "${setId}" is not one this provider made; remove the snapshot by hand.`,
    );
  }
  return parsed.data.setDirs;
}

/**
 * The `release` of a copy-based snapshot (copy, fsfreeze, reflink): removes every set directory
 * its handle names; `removeEmptyParent` also removes a store directory left empty.
 */
export async function releaseSetDirs(
  provider: string,
  snapshot: ProviderSnapshot,
  options: { removeEmptyParent: boolean; signal?: AbortSignal },
): Promise<void> {
  const { removeEmptyParent, signal } = options;
  await providerOperation(`releasing the ${provider} snapshot of set ${snapshot.setId}`, signal, async () => {
    for (const setDir of parseSetDirsHandle(provider, snapshot.setId, snapshot.handle)) {
      await removeSetDir(setDir, { removeEmptyParent, signal });
    }
  });
}

/** The bytes a tree takes on disk (allocated blocks, as `du` counts them); 0 when it is gone. */
export async function treeBytes(path: string): Promise<number> {
  let stats;
  try {
    stats = await lstat(path);
  } catch {
    return 0;
  }
  let bytes = stats.blocks * 512;
  if (stats.isDirectory()) {
    const names = await readdir(path).catch(() => [] as string[]);
    for (const name of names) bytes += await treeBytes(join(path, name));
  }
  return bytes;
}

/** The set directories `<store>/<setId>` that exist, with the snapshot that removes them (see `releaseSetDirs`). */
export async function leftoverSetDirs(
  provider: ProviderName,
  setId: string,
  stores: readonly string[],
): Promise<LeftoverSnapshot | null> {
  const dirs: string[] = [];
  for (const dir of new Set(stores.map((store) => join(store, setId)))) {
    const stats = await lstat(dir).catch(() => null);
    if (stats?.isDirectory()) dirs.push(dir);
  }
  if (dirs.length === 0) return null;
  let bytes = 0;
  for (const dir of dirs) bytes += await treeBytes(dir);
  return { snapshot: { provider, setId, paths: [], handle: setDirsHandle(dirs) }, dirs, bytes };
}
