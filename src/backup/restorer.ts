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
import { join } from 'node:path';
import { QuiesceError, utimesSeconds, type CallOptions, type Failure } from '../model/index.ts';
import {
  NodeNameSchema,
  type DirNode,
  type FileNode,
  type Repository,
  type SymlinkNode,
  type Tree,
  type TreeNode,
} from '../repository/index.ts';
import { awaitedLater } from '../util/index.ts';
import { insideTarget, prepareTarget } from './restore-target.ts';

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

/** How much of a directory is restored: all of it, or only the way to an included path. */
type RestoreMode = 'all' | 'path';

/**
 * Restores a tree (or the parts of it under `include`) below `target`, with modes, owners,
 * times and symlinks. Nothing is ever written outside the target, whatever the tree says:
 * names are single path elements (checked again here), every entry is created by lstat-checked
 * steps that never follow a symlink, and files are written to a temporary name and renamed into
 * place. A file whose data is damaged fails on its own, loudly; the others restore.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const target = await prepareTarget(options.target);
  const run = new RestoreRun(options, target);
  await run.restoreDir(options.tree, target, '', run.include.length === 0 ? 'all' : 'path', false);
  return run.result;
}

/** Every name is checked before anything of a directory is written. */
function checkNames(tree: Tree, treeId: string): void {
  for (const node of tree.nodes) {
    if (!NodeNameSchema.safeParse(node.name).success) {
      throw new QuiesceError(
        'damaged',
        `tree ${treeId} has an entry named ${JSON.stringify(node.name)}, which is not a single path element; refusing to restore it`,
      );
    }
  }
}

/**
 * A directory's small files' blobs, read ahead a batch of entries at a time, with one ranged
 * load for each run of them that lies together in a pack (as the backup packed them).
 */
class SmallBlobPreloader {
  readonly #loading = new Map<string, Promise<Buffer>>();
  /** The entries up to here have been looked at. */
  upTo = 0;

  constructor(
    private readonly run: RestoreRun,
    private readonly tree: Tree,
    private readonly original: string,
    private readonly mode: RestoreMode,
  ) {}

  preload(upTo: number): void {
    const ids: string[] = [];
    const { nodes } = this.tree;
    for (; this.upTo < Math.min(upTo, nodes.length); this.upTo++) {
      const node = nodes[this.upTo]!;
      if (node.type !== 'file' || node.content.length !== 1 || node.size > PRELOAD_MAX) continue;
      if (this.mode === 'all' || this.run.wanted(`${this.original}/${node.name}`) === 'all')
        ids.push(node.content[0]!.id);
    }
    for (const [id, loading] of this.run.repository.loadBlobs(ids, this.run.options)) this.#loading.set(id, loading);
  }

  take(id: string): Promise<Buffer> | undefined {
    const loading = this.#loading.get(id);
    this.#loading.delete(id); // held no longer than needed (a second file of the same content loads its own)
    return loading;
  }

  clear(): void {
    this.#loading.clear();
  }
}

/** The state of one restore: what it restores where, and its totals. */
class RestoreRun {
  readonly repository: Repository;
  readonly owners: boolean;
  readonly include: string[];
  readonly result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytesWritten: 0, failed: [] };

  constructor(
    readonly options: RestoreOptions,
    readonly target: string,
  ) {
    this.repository = options.repository;
    this.owners = options.owners ?? process.getuid?.() === 0;
    this.include = (options.include ?? []).map((p) => p.replace(/\/+$/, '') || '/');
  }

  /** Is `original` wanted: inside an include, or on the way to one? */
  wanted(original: string): RestoreMode | false {
    const { include } = this;
    if (include.length === 0) return 'all';
    for (const p of include) {
      if (p === '/' || original === p || original.startsWith(`${p}/`)) return 'all';
    }
    for (const p of include) if (p.startsWith(`${original}/`)) return 'path';
    return false;
  }

  /** `fresh`: `dir` was made by this restore, so nothing is in the way of its entries. */
  async restoreDir(treeId: string, dir: string, original: string, mode: RestoreMode, fresh: boolean): Promise<void> {
    const tree = await this.repository.loadTree(treeId, this.options);
    checkNames(tree, treeId);
    const preloader = new SmallBlobPreloader(this, tree, original, mode);
    preloader.preload(PRELOAD_BATCH);
    // A few entries at a time: small files are a run of round trips to the disk.
    let next = 0;
    const walker = async () => {
      while (next < tree.nodes.length) {
        if (next + PRELOAD_BATCH / 2 >= preloader.upTo) preloader.preload(preloader.upTo + PRELOAD_BATCH);
        const node = tree.nodes[next++]!;
        this.options.signal?.throwIfAborted();
        await this.restoreEntry(node, dir, original, mode, fresh, preloader);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(ENTRY_CONCURRENCY, tree.nodes.length) }, walker));
    } finally {
      preloader.clear();
    }
  }

  async restoreEntry(
    node: TreeNode,
    dir: string,
    original: string,
    mode: RestoreMode,
    fresh: boolean,
    preloader: SmallBlobPreloader,
  ): Promise<void> {
    const childOriginal = `${original}/${node.name}`;
    const childMode = mode === 'all' ? 'all' : this.wanted(childOriginal);
    if (!childMode) return;
    const path = join(dir, node.name);
    if (!insideTarget(this.target, path))
      throw new QuiesceError('damaged', `refusing to restore ${childOriginal} outside ${this.target}`);
    switch (node.type) {
      case 'dir':
        await this.restoreDirNode(node, path, childOriginal, childMode, fresh);
        break;
      case 'file':
        if (childMode === 'all')
          await this.restoreFile(node, path, childOriginal, fresh, preloader.take(node.content[0]?.id ?? ''));
        break;
      case 'symlink':
        if (childMode === 'all') await this.restoreSymlink(node, path, fresh);
        break;
      default:
        node satisfies never;
    }
  }

  async restoreDirNode(
    node: DirNode,
    path: string,
    original: string,
    mode: RestoreMode,
    inFresh: boolean,
  ): Promise<void> {
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing && !existing.isDirectory()) await rm(path, { force: true });
    if (!existing || !existing.isDirectory()) await mkdir(path, { mode: 0o700 });
    await this.restoreDir(node.subtree, path, original, mode, !existing?.isDirectory());
    this.result.dirs++;
    await this.applyMeta(node, path);
  }

  async restoreFile(
    node: FileNode,
    path: string,
    original: string,
    inFresh: boolean,
    preloaded: Promise<Buffer> | undefined,
  ): Promise<void> {
    const temp = join(path, '..', `.${node.name.slice(0, 200)}.quiesce-restore-${randomBytes(4).toString('hex')}`);
    const handle = await open(temp, 'wx', 0o600);
    try {
      await this.writeContent(handle, node, original, preloaded);
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      if (error instanceof QuiesceError && error.code === 'damaged') {
        this.result.failed.push({ path: original, error: error.toJSON() });
        this.progress(original);
        return;
      }
      throw error;
    }
    await handle.close();
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing?.isDirectory()) await rm(path, { recursive: true, force: true });
    await rename(temp, path);
    await this.applyMeta(node, path);
    this.result.files++;
    this.progress(original);
  }

  /** A file's blobs, in order, into `handle`; the next blobs load while one is written. */
  async writeContent(
    handle: FileHandle,
    node: FileNode,
    original: string,
    preloaded: Promise<Buffer> | undefined,
  ): Promise<void> {
    const { repository, options } = this;
    let position = 0;
    let fileEnd = 0;
    const loads = new Map<number, Promise<Buffer>>();
    const load = (i: number) => {
      const ref = node.content[i];
      if (ref === undefined) return;
      loads.set(i, awaitedLater((i === 0 ? preloaded : undefined) ?? repository.loadBlob(ref.id, options)));
    };
    for (let i = 0; i < PREFETCH; i++) load(i);
    for (const [i, ref] of node.content.entries()) {
      options.signal?.throwIfAborted();
      const data = await loads.get(i)!;
      loads.delete(i);
      load(i + PREFETCH);
      if (data.length !== ref.length)
        throw new QuiesceError('damaged', `blob ${ref.id} of ${original} has ${data.length} bytes, not ${ref.length}`);
      // Not `+= await`: that reads the total before the wait, and files are restored in parallel.
      const { written, end } = await writeSparse(handle, data, position);
      this.result.bytesWritten += written;
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
  }

  async restoreSymlink(node: SymlinkNode, path: string, inFresh: boolean): Promise<void> {
    const existing = inFresh ? null : await lstat(path).catch(() => null);
    if (existing) await rm(path, { recursive: true, force: true });
    await symlink(node.target, path);
    this.result.symlinks++;
    if (this.owners) await lchown(path, node.uid, node.gid).catch(() => undefined);
    const time = utimesSeconds(node.mtimeNs);
    await lutimes(path, time, time).catch(() => undefined);
  }

  async applyMeta(node: TreeNode, path: string): Promise<void> {
    if (this.owners) await lchown(path, node.uid, node.gid);
    await chmod(path, node.mode & 0o7777);
    const time = utimesSeconds(node.mtimeNs);
    await utimes(path, time, time);
  }

  progress(currentPath: string): void {
    this.options.onProgress?.({ files: this.result.files, bytesWritten: this.result.bytesWritten, currentPath });
  }
}
