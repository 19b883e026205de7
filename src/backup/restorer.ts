import { randomBytes } from 'node:crypto';
import {
  chmod,
  lchown,
  lstat,
  lutimes,
  mkdir,
  open,
  rename,
  rm,
  symlink,
  unlink,
  utimes,
  type FileHandle,
} from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { QuiesceError, utimesSeconds, type CallOptions, type Failure } from '../model/index.ts';
import { NodeNameSchema, type DirNode, type FileNode, type SymlinkNode, type TreeNode } from '../repository/tree.ts';
import type { Repository } from '../repository/index.ts';

export interface RestoreOptions extends CallOptions {
  repository: Repository;
  tree: string;
  /** The directory to restore into; original `/srv/a` lands at `<target>/srv/a`. */
  target: string;
  /** Restore only these original paths (files or directories) and what is below them. */
  include?: string[];
  /** Restore owners (default: when running as root). */
  owners?: boolean;
  onProgress?: (progress: RestoreProgress) => void;
}

export interface RestoreProgress {
  files: number;
  bytesWritten: number;
  currentPath: string;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytesWritten: number;
  /** Files that could not be restored (damaged data): each named, none left half-written. */
  failed: { path: string; error: Failure }[];
}

/** Directory entries restored at once. */
const ENTRY_CONCURRENCY = 8;
/** A directory's entries whose small files' blobs are read ahead at once, and what counts as small. */
const PRELOAD_BATCH = 128;
const PRELOAD_MAX = 64 * 1024;
/** Blobs of one file loaded ahead of the one being written. */
const PREFETCH = 3;

/** Holes are kept at this granularity: all-zero blocks are skipped, so sparse files come back sparse. */
const SPARSE_BLOCK = 64 << 10;
const ZERO = Buffer.alloc(SPARSE_BLOCK);

/**
 * Writes `data` at `position`, leaving all-zero blocks as holes; returns the bytes written and
 * where the last write ended in the file (0 if nothing was written).
 */
async function writeSparse(
  handle: FileHandle,
  data: Buffer,
  position: number,
): Promise<{ written: number; end: number }> {
  let written = 0;
  let runStart = -1;
  let lastEnd = 0;
  const flush = async (end: number) => {
    if (runStart < 0) return;
    await handle.write(data, runStart, end - runStart, position + runStart);
    written += end - runStart;
    lastEnd = position + end;
    runStart = -1;
  };
  for (let offset = 0; offset < data.length; offset += SPARSE_BLOCK) {
    const end = Math.min(data.length, offset + SPARSE_BLOCK);
    const zero = data.subarray(offset, end).equals(ZERO.subarray(0, end - offset));
    if (zero) await flush(offset);
    else if (runStart < 0) runStart = offset;
  }
  await flush(data.length);
  return { written, end: lastEnd };
}

/**
 * Restores a tree (or the parts of it under `include`) below `target`, with modes, owners,
 * times and symlinks. Nothing is ever written outside the target, whatever the tree says:
 * names are single path elements (checked again here), every entry is created by lstat-checked
 * steps that never follow a symlink, and files are written to a temporary name and renamed into
 * place. A file whose data is damaged fails on its own, loudly; the others restore.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const { repository } = options;
  const target = resolve(options.target);
  const owners = options.owners ?? process.getuid?.() === 0;
  const include = (options.include ?? []).map((p) => p.replace(/\/+$/, '') || '/');
  const result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytesWritten: 0, failed: [] };
  await mkdir(target, { recursive: true });
  const targetStats = await lstat(target);
  if (!targetStats.isDirectory())
    throw new QuiesceError('bad-usage', `the restore target ${target} is not a directory`);

  /** Is `original` wanted: inside an include, or on the way to one? */
  function wanted(original: string): 'all' | 'path' | false {
    if (include.length === 0) return 'all';
    for (const p of include) {
      if (p === '/' || original === p || original.startsWith(`${p}/`)) return 'all';
    }
    for (const p of include) if (p.startsWith(`${original}/`)) return 'path';
    return false;
  }

  /** `fresh`: `dir` was made by this restore, so nothing is in the way of its entries. */
  async function restoreDir(
    treeId: string,
    dir: string,
    original: string,
    mode: 'all' | 'path',
    fresh: boolean,
  ): Promise<void> {
    const tree = await repository.loadTree(treeId, options);
    // Every name is checked before anything of this directory is written.
    for (const node of tree.nodes) {
      if (!NodeNameSchema.safeParse(node.name).success) {
        throw new QuiesceError(
          'damaged',
          `tree ${treeId} has an entry named ${JSON.stringify(node.name)}, which is not a single path element; refusing to restore it`,
        );
      }
    }
    // Small files' blobs are read ahead, a batch of entries at a time, with one ranged load for
    // each run of them that lies together in a pack (as the backup packed them).
    const preloaded = new Map<string, Promise<Buffer>>();
    let preloadedUpTo = 0;
    const preload = (upTo: number) => {
      const ids: string[] = [];
      for (; preloadedUpTo < Math.min(upTo, tree.nodes.length); preloadedUpTo++) {
        const node = tree.nodes[preloadedUpTo]!;
        if (node.type !== 'file' || node.content.length !== 1 || node.size > PRELOAD_MAX) continue;
        if (mode === 'all' || wanted(`${original}/${node.name}`) === 'all') ids.push(node.content[0]!.id);
      }
      for (const [id, loading] of repository.loadBlobs(ids, options)) preloaded.set(id, loading);
    };
    const preloadedBlob = (id: string): Promise<Buffer> | undefined => {
      const loading = preloaded.get(id);
      preloaded.delete(id); // held no longer than needed (a second file of the same content loads its own)
      return loading;
    };
    preload(PRELOAD_BATCH);
    // A few entries at a time: small files are a run of round trips to the disk.
    let next = 0;
    const walker = async () => {
      while (next < tree.nodes.length) {
        if (next + PRELOAD_BATCH / 2 >= preloadedUpTo) preload(preloadedUpTo + PRELOAD_BATCH);
        const node = tree.nodes[next++]!;
        options.signal?.throwIfAborted();
        const childOriginal = `${original}/${node.name}`;
        const childMode = mode === 'all' ? 'all' : wanted(childOriginal);
        if (!childMode) continue;
        const path = join(dir, node.name);
        if (!path.startsWith(`${target}/`))
          throw new QuiesceError('damaged', `refusing to restore ${childOriginal} outside ${target}`);
        switch (node.type) {
          case 'dir':
            await restoreDirNode(node, path, childOriginal, childMode, fresh);
            break;
          case 'file':
            if (childMode === 'all')
              await restoreFile(node, path, childOriginal, fresh, preloadedBlob(node.content[0]?.id ?? ''));
            break;
          case 'symlink':
            if (childMode === 'all') await restoreSymlink(node, path, fresh);
            break;
          default:
            node satisfies never;
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(ENTRY_CONCURRENCY, tree.nodes.length) }, walker));
    } finally {
      preloaded.clear();
    }
  }

  async function restoreDirNode(
    node: DirNode,
    path: string,
    original: string,
    mode: 'all' | 'path',
    inFresh: boolean,
  ): Promise<void> {
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing && !existing.isDirectory()) await rm(path, { force: true });
    if (!existing || !existing.isDirectory()) await mkdir(path, { mode: 0o700 });
    await restoreDir(node.subtree, path, original, mode, !existing?.isDirectory());
    result.dirs++;
    await applyMeta(node, path);
  }

  async function restoreFile(
    node: FileNode,
    path: string,
    original: string,
    inFresh: boolean,
    preloaded: Promise<Buffer> | undefined,
  ): Promise<void> {
    const temp = join(path, '..', `.${node.name.slice(0, 200)}.quiesce-restore-${randomBytes(4).toString('hex')}`);
    const handle = await open(temp, 'wx', 0o600);
    let position = 0;
    let fileEnd = 0;
    try {
      // The next blobs load while this one is written.
      const loads = new Map<number, Promise<Buffer>>();
      const load = (i: number) => {
        const ref = node.content[i];
        if (ref === undefined) return;
        const loading = (i === 0 ? preloaded : undefined) ?? repository.loadBlob(ref.id, options);
        loading.catch(() => undefined); // awaited below in order; never an unhandled rejection meanwhile
        loads.set(i, loading);
      };
      for (let i = 0; i < PREFETCH; i++) load(i);
      for (const [i, ref] of node.content.entries()) {
        options.signal?.throwIfAborted();
        const data = await loads.get(i)!;
        loads.delete(i);
        load(i + PREFETCH);
        if (data.length !== ref.length)
          throw new QuiesceError(
            'damaged',
            `blob ${ref.id} of ${original} has ${data.length} bytes, not ${ref.length}`,
          );
        // Not `+= await`: that reads the total before the wait, and files are restored in parallel.
        const { written, end } = await writeSparse(handle, data, position);
        result.bytesWritten += written;
        if (written > 0) fileEnd = end;
        position += data.length;
        // Written out: its memory may hold the next blob (and `data` reads as empty from here on).
        // A preloaded blob may serve other files too: not that one.
        if (i > 0 || preloaded === undefined) repository.releaseBlob(data);
      }
      if (position !== node.size)
        throw new QuiesceError(
          'damaged',
          `${original} should have ${node.size} bytes but its content adds up to ${position}`,
        );
      // No fsync per file (restic does none either): a restore interrupted by a crash is simply run again.
      // A file that ends in a hole gets its length here.
      if (fileEnd !== node.size) await handle.truncate(node.size);
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      if (error instanceof QuiesceError && error.code === 'damaged') {
        result.failed.push({ path: original, error: error.toJSON() });
        options.onProgress?.({ files: result.files, bytesWritten: result.bytesWritten, currentPath: original });
        return;
      }
      throw error;
    }
    await handle.close();
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing?.isDirectory()) await rm(path, { recursive: true, force: true });
    await rename(temp, path);
    await applyMeta(node, path);
    result.files++;
    options.onProgress?.({ files: result.files, bytesWritten: result.bytesWritten, currentPath: original });
  }

  async function restoreSymlink(node: SymlinkNode, path: string, inFresh: boolean): Promise<void> {
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing) await rm(path, { recursive: true, force: true });
    await symlink(node.target, path);
    result.symlinks++;
    if (owners) await lchown(path, node.uid, node.gid).catch(() => undefined);
    const time = utimesSeconds(node.mtimeNs);
    await lutimes(path, time, time).catch(() => undefined);
  }

  async function applyMeta(node: TreeNode, path: string): Promise<void> {
    if (owners) await lchown(path, node.uid, node.gid);
    await chmod(path, node.mode & 0o7777);
    const time = utimesSeconds(node.mtimeNs);
    await utimes(path, time, time);
  }

  await restoreDir(options.tree, target, '', include.length === 0 ? 'all' : 'path', false);
  return result;
}
