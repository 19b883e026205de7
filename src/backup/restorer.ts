import { randomBytes } from 'node:crypto';
import { chmod, lchown, lstat, mkdir, open, rename, rm, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  decodeRawName,
  encodeRawName,
  parseRawNameEscapes,
  QuiesceError,
  rawPath,
  type CallOptions,
  type Failure,
} from '../model/index.ts';
import {
  NodeNameSchema,
  type DirNode,
  type FileNode,
  type RestorerRepository,
  type SpecialNode,
  type SymlinkNode,
  type Tree,
  type TreeNode,
} from '../repository/index.ts';
import { awaitedLater, setTimesNs } from '../util/index.ts';
import { HardLinkRestore } from './hard-links.ts';
import { RestoreBounds } from './restore-bounds.ts';
import { entryFailure, entryRefused, nodeProblem, pathProblem } from './restore-errors.ts';
import { nameTooLong } from './restore-name-limits.ts';
import { makeSpecial, type SkippedEntry } from './restore-special.ts';
import { insideTarget, prepareTarget } from './restore-target.ts';

export interface RestoreOptions extends CallOptions {
  repository: RestorerRepository;
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
  /** FIFOs and device nodes made. */
  special: number;
  bytesWritten: number;
  /** Files that could not be restored (damaged data): each named, none left half-written. */
  failed: { path: string; error: Failure }[];
  /** Entries deliberately not made: sockets, and device nodes when not root (the restore still succeeds). */
  skipped: SkippedEntry[];
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
  if (run.include.length === 0) await run.bounds.admit(options.tree, `the tree ${options.tree}`);
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
  readonly repository: RestorerRepository;
  readonly owners: boolean;
  readonly include: string[];
  readonly result: RestoreResult = {
    files: 0,
    dirs: 0,
    symlinks: 0,
    special: 0,
    bytesWritten: 0,
    failed: [],
    skipped: [],
  };
  readonly links = new HardLinkRestore();
  readonly bounds: RestoreBounds;

  constructor(
    readonly options: RestoreOptions,
    readonly target: string,
  ) {
    this.repository = options.repository;
    this.owners = options.owners ?? process.getuid?.() === 0;
    // A path as the output shows it, a byte that is not UTF-8 as `\xHH`, selects that name too.
    this.include = [
      ...new Set(
        (options.include ?? []).flatMap((p) => [p, parseRawNameEscapes(p)].map((q) => q.replace(/\/+$/, '') || '/')),
      ),
    ];
    this.bounds = new RestoreBounds(this.repository, options);
  }

  /**
   * Records an entry that failed on its own (see `entryFailure`) and answers true; false for an
   * error that must stop the restore.
   */
  entryFailed(original: string, error: unknown): boolean {
    const failure = entryFailure(error);
    if (failure === null) return false;
    this.result.failed.push({ path: original, error: failure });
    this.progress(original);
    return true;
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
    // A few entries at a time: small files are a run of round trips to the disk. An entry that
    // fails alone is recorded; an error that stops the restore stops every walker, and is thrown
    // once all have settled (none is left writing a temporary file).
    let next = 0;
    const stop: { error?: unknown; stopped: boolean } = { stopped: false };
    const walker = async () => {
      while (next < tree.nodes.length && !stop.stopped) {
        if (next + PRELOAD_BATCH / 2 >= preloader.upTo) preloader.preload(preloader.upTo + PRELOAD_BATCH);
        const node = tree.nodes[next++]!;
        try {
          this.options.signal?.throwIfAborted();
          await this.restoreEntry(node, dir, original, mode, fresh, preloader);
        } catch (error) {
          // A name or path longer than the file system takes fails on its own (a directory with all below it).
          const entry = `${original}/${node.name}`;
          const tooLong = nameTooLong(error, entry, join(dir, node.name));
          if (tooLong !== undefined) this.result.failed.push({ path: entry, error: tooLong.toJSON() });
          else if (!stop.stopped && !this.entryFailed(entry, error)) Object.assign(stop, { error, stopped: true });
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(ENTRY_CONCURRENCY, tree.nodes.length) }, walker));
    } finally {
      preloader.clear();
    }
    if (stop.stopped) throw stop.error;
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
    const problem = pathProblem(path) ?? (node.type === 'dir' ? null : nodeProblem(node));
    if (problem !== null) throw entryRefused(problem);
    if (mode === 'path' && childMode === 'all' && node.type === 'dir')
      await this.bounds.admit(node.subtree, childOriginal);
    switch (node.type) {
      case 'dir':
        await this.restoreDirNode(node, path, childOriginal, childMode, fresh);
        break;
      case 'file':
        if (childMode === 'all') await this.restoreFileNode(node, path, childOriginal, fresh, preloader);
        break;
      case 'symlink':
        if (childMode === 'all') await this.restoreSymlink(node, path, fresh);
        break;
      default:
        if (childMode === 'all') await this.restoreSpecial(node, path, childOriginal, fresh);
    }
  }

  /** A file, or a later name of a multiply-linked one as a link to the first (see `HardLinkRestore`). */
  async restoreFileNode(
    node: FileNode,
    path: string,
    original: string,
    fresh: boolean,
    preloader: SmallBlobPreloader,
  ): Promise<void> {
    const preloaded = preloader.take(node.content[0]?.id ?? '');
    const linked = await this.links.restore(node, path, fresh, () =>
      this.restoreFile(node, path, original, fresh, preloaded),
    );
    if (!linked) return;
    this.result.files++;
    this.progress(original);
  }

  /** A FIFO or device (as tar restores them), or a socket, which is reported skipped. */
  async restoreSpecial(node: SpecialNode, path: string, original: string, fresh: boolean): Promise<void> {
    const skipped = await makeSpecial(node, path, fresh, process.getuid?.() === 0);
    if (skipped !== null) {
      this.result.skipped.push({ path: original, reason: skipped });
      return;
    }
    await this.applyMeta(node, path);
    this.result.special++;
  }

  async restoreDirNode(
    node: DirNode,
    path: string,
    original: string,
    mode: RestoreMode,
    inFresh: boolean,
  ): Promise<void> {
    const existing = inFresh ? null : await lstat(rawPath(path)).catch(() => null);
    if (existing && !existing.isDirectory()) await rm(rawPath(path), { force: true });
    if (!existing || !existing.isDirectory()) await mkdir(rawPath(path), { mode: 0o700 });
    await this.restoreDir(node.subtree, path, original, mode, !existing?.isDirectory());
    this.result.dirs++;
    const problem = nodeProblem(node);
    if (problem !== null) throw entryRefused(`${problem} (what it holds is restored)`);
    await this.applyMeta(node, path);
  }

  async restoreFile(
    node: FileNode,
    path: string,
    original: string,
    inFresh: boolean,
    preloaded: Promise<Buffer> | undefined,
  ): Promise<boolean> {
    // At most 200 bytes of the name: the temporary name stays within NAME_MAX whatever the name.
    const prefix = decodeRawName(encodeRawName(node.name).subarray(0, 200));
    const temp = rawPath(join(path, '..', `.${prefix}.quiesce-restore-${randomBytes(4).toString('hex')}`));
    const handle = await open(temp, 'wx', 0o600);
    try {
      await this.writeContent(handle, node, original, preloaded);
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw error; // a damaged file is recorded by the walker, which goes on
    }
    await handle.close();
    const existing = inFresh ? null : await lstat(rawPath(path)).catch(() => null);
    if (existing?.isDirectory()) await rm(rawPath(path), { recursive: true, force: true });
    await rename(temp, rawPath(path)).catch(async (error: unknown) => {
      await unlink(temp).catch(() => undefined);
      throw error;
    });
    await this.applyMeta(node, path);
    this.result.files++;
    this.progress(original);
    return true;
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
    const raw = rawPath(path);
    const existing = inFresh ? null : await lstat(raw).catch(() => null);
    if (existing) await rm(raw, { recursive: true, force: true });
    await symlink(rawPath(node.target), raw);
    this.result.symlinks++;
    if (this.owners) await lchown(raw, node.uid, node.gid).catch(() => undefined);
    const time = BigInt(node.mtimeNs);
    await setTimesNs(raw, time, time, true).catch(() => undefined);
  }

  async applyMeta(node: TreeNode, path: string): Promise<void> {
    const raw = rawPath(path);
    if (this.owners) await lchown(raw, node.uid, node.gid);
    await chmod(raw, node.mode & 0o7777);
    const time = BigInt(node.mtimeNs);
    await setTimesNs(raw, time, time);
  }

  progress(currentPath: string): void {
    this.options.onProgress?.({ files: this.result.files, bytesWritten: this.result.bytesWritten, currentPath });
  }
}
