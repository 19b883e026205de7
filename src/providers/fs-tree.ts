import { constants, lstatSync, readdirSync } from 'node:fs';
import { copiedTimeNs, decodeRawName, sameMicrosecond } from '../model/index.ts';
import { chmod, copyFile, lchown, link, lstat, mkdir, readdir, readlink, rm, symlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import type { CallOptions, KnownFile, KnownFiles, UnchangedFile } from '../model/index.ts';
import {
  awaitedLater,
  canMakeNodes,
  InFlightLimit,
  isErrno,
  makeNode,
  nativeFsAvailable,
  setTimesNs,
} from '../util/index.ts';
import { throwIfAborted } from './provider-error.ts';
import { isRoot } from './run-command.ts';
import { isFileSystemRootNow } from './snapshot-store.ts';

export interface CopyTreeOptions extends CallOptions {
  /** `auto` clones where the file system can and copies otherwise; `force` clones or fails. */
  clone?: 'auto' | 'force';
  /** Paths skipped entirely, e.g. the snapshot store when it lies inside the tree. */
  exclude?: ReadonlySet<string>;
  /**
   * Names of directories skipped at the root of a file system or btrfs subvolume (the snapshot
   * stores of other providers, `<root>/.quiesce-snapshots`); elsewhere such a name is copied.
   */
  skipNames?: ReadonlySet<string>;
  /** Directories recreated empty but not entered, e.g. mount points of other file systems. */
  stopAt?: ReadonlySet<string>;
  /** Files copied at once. */
  concurrency?: number;
  /**
   * Files the requester holds already: one whose size and mtime match is not copied but pushed
   * onto `unchanged`. With `known`, `original` names the source in the requester's terms (the
   * source's path with its parents' symlinks as the requester wrote them); default `source`.
   */
  known?: KnownFiles;
  original?: string;
  unchanged?: UnchangedFile[];
}

type Path = Buffer;

/** A directory's entry: its name, the name as text (bytes not UTF-8 escaped: `decodeRawName`), its source path. */
interface Entry {
  name: Path;
  text: string;
  path: Path;
}

/**
 * Copies the file, directory or symlink `source` to `target`, preserving modes, times (to the
 * nanosecond with the native addon), symlinks, hard links within the tree and (as root) owners.
 * FIFOs and sockets are remade as empty nodes (never opened: a FIFO's open blocks), devices as
 * root; without root or the addon they are skipped, as are entries that vanish while the tree is
 * walked. Returns false when `source` does not exist. The signal is checked between files; on
 * failure the caller removes `target`.
 *
 * Paths are handled as bytes, so names that are not valid UTF-8 survive.
 */
export async function copyTree(source: string, target: string, options: CopyTreeOptions = {}): Promise<boolean> {
  const copier = new TreeCopier(options);
  try {
    const copied = await copier.visit(
      Buffer.from(source),
      Buffer.from(target),
      true,
      undefined,
      options.original ?? source,
    );
    await copier.finish();
    return copied;
  } catch (error) {
    await copier.settle();
    throw error;
  }
}

class TreeCopier {
  private readonly signal: AbortSignal | undefined;
  private readonly cloneFlag: number;
  private readonly exclude: ReadonlySet<string>;
  private readonly stopAt: ReadonlySet<string>;
  private readonly skipNames: ReadonlySet<string>;
  /** Directory walks under way besides the caller's own. */
  private walks = 0;
  private readonly known: KnownFiles | undefined;
  private readonly unchanged: UnchangedFile[];
  private readonly asRoot = isRoot();
  /** Directories are listed and entries' stats read on this thread until that proved slow (see `statBatch`). */
  private statsInline = true;
  private readonly inlineStats = { count: 0, ms: 0 };
  /** The file copies in flight. */
  private readonly copies: InFlightLimit;
  private readonly directories: { target: Path; stats: BigIntStats }[] = [];
  /** First copy of each multiply-linked inode, so later names become hard links to it. */
  private readonly linked = new Map<string, Promise<Path>>();
  private failure: { error: unknown } | undefined;

  constructor(options: CopyTreeOptions) {
    this.signal = options.signal;
    this.cloneFlag = options.clone === 'force' ? constants.COPYFILE_FICLONE_FORCE : constants.COPYFILE_FICLONE;
    this.exclude = options.exclude ?? new Set();
    this.stopAt = options.stopAt ?? new Set();
    this.skipNames = options.skipNames ?? new Set();
    this.copies = new InFlightLimit(Math.max(1, options.concurrency ?? 8));
    this.known = options.known;
    this.unchanged = options.unchanged ?? [];
  }

  /**
   * `known`: the stats of `source` when its directory's walk already read them (null: it vanished).
   * `original`: the source's path in the requester's terms, names as `decodeRawName` gives them
   * (the known files are looked up by it).
   * `madeParent`: makes the target's parent directory (it may be made only once something is
   * copied into it; see `visitDirectory`); absent when it exists.
   */
  async visit(
    source: Path,
    target: Path,
    top: boolean,
    known?: BigIntStats | null,
    original?: string,
    madeParent?: () => Promise<void>,
  ): Promise<boolean> {
    throwIfAborted(this.signal, 'copying the snapshot');
    this.throwIfFailed();
    const stats = known === undefined ? await statOrNull(source) : known;
    if (stats === null) return false;
    if (stats.isDirectory()) return this.visitDirectory(source, target, top, stats, original, madeParent);
    // Files, the most of any tree, are queued right here: no further call to wait for.
    if (stats.isFile()) {
      await madeParent?.();
      await this.schedule(() => this.copyFile(source, target, stats));
    } else if (stats.isSymbolicLink()) {
      await madeParent?.();
      return this.copySymlink(source, target, stats);
    } else if (this.canCopySpecial(stats)) {
      await madeParent?.();
      await this.copySpecial(target, stats);
    }
    return true;
  }

  /** FIFOs and sockets need the addon's mknod; devices root as well. */
  private canCopySpecial(stats: BigIntStats): boolean {
    if (stats.isFIFO() || stats.isSocket()) return canMakeNodes();
    return (stats.isCharacterDevice() || stats.isBlockDevice()) && this.asRoot && canMakeNodes();
  }

  /** A FIFO, socket or device made anew with mknod (its content is nothing to copy), with its metadata. */
  private async copySpecial(target: Path, stats: BigIntStats): Promise<void> {
    try {
      makeNode(target, Number(stats.mode), stats.rdev);
    } catch (error) {
      if (isErrno(error, 'EPERM', 'EOPNOTSUPP')) return; // no CAP_MKNOD (a container): left out, as before
      throw error;
    }
    await this.applyMetadata(target, stats);
  }

  /**
   * With known files, a directory below the top is made only when something is copied into it.
   * One that holds nothing but known files (and such directories) is left out whole, and listed
   * in `unchanged` as a directory: an unchanged tree is walked, not rebuilt.
   */
  private async visitDirectory(
    source: Path,
    target: Path,
    top: boolean,
    stats: BigIntStats,
    original: string | undefined,
    madeParent: (() => Promise<void>) | undefined,
  ): Promise<boolean> {
    let making: Promise<void> | undefined;
    const made = (): Promise<void> =>
      (making ??= (async () => {
        await madeParent?.();
        await makeDirectory(target);
        this.directories.push({ target, stats });
      })());
    const stopHere = !top && this.stopAt.has(source.toString());
    const mayLeaveOut = !top && this.known !== undefined && original !== undefined && !stopHere;
    if (!mayLeaveOut) await made();
    if (stopHere) return true;
    let names: Path[];
    try {
      names = this.statsInline
        ? readdirSync(source, { encoding: 'buffer' })
        : await readdir(source, { encoding: 'buffer' });
    } catch (error) {
      if (isErrno(error, 'ENOENT', 'ENOTDIR')) return true;
      throw error;
    }
    const held =
      this.known !== undefined && original !== undefined
        ? await this.known.inDirectory(original, { signal: this.signal })
        : null;
    const subdirectories = await this.visitEntries(this.entriesOf(source, names), target, original, held, made);
    await this.walkDirectories(subdirectories);
    if (making === undefined) this.unchanged.push(unchangedDirectory(target, original!, stats));
    return true;
  }

  /** Each entry's name as text and its source path, made once; the excluded left out. */
  private entriesOf(source: Path, names: Path[]): Entry[] {
    const sourceDir = withSlash(source);
    let atRoot: boolean | undefined; // asked only when a skipped name is there
    return names
      .map((name) => ({ name, text: decodeRawName(name), path: Buffer.concat([sourceDir, name]) }))
      .filter(
        ({ text, path }) =>
          !(this.exclude.size > 0 && this.exclude.has(path.toString())) &&
          !(this.skipNames.has(text) && (atRoot ??= isFileSystemRootNow(source))),
      );
  }

  /**
   * The entries' stats a batch at a time (each is a round trip to the thread pool), then each
   * entry in order: files go to the copy queue, and the directories are answered, to be walked
   * after them.
   */
  private async visitEntries(
    entries: Entry[],
    target: Path,
    original: string | undefined,
    held: ReadonlyMap<string, KnownFile> | null,
    made: () => Promise<void>,
  ): Promise<(() => Promise<boolean>)[]> {
    const targetDir = withSlash(target);
    const snapshotDir = decodeRawName(target);
    const subdirectories: (() => Promise<boolean>)[] = [];
    for (let from = 0; from < entries.length; from += STAT_BATCH) {
      const batch = entries.slice(from, from + STAT_BATCH);
      const stats = await this.statBatch(batch.map((entry) => entry.path));
      for (let i = 0; i < batch.length; i++) {
        const { name, text, path } = batch[i]!;
        const entryStats = stats[i];
        if (this.leftOutUnchanged(snapshotDir, text, entryStats, held)) continue;
        const entryOriginal = original !== undefined ? `${original === '/' ? '' : original}/${text}` : undefined;
        const visit = () => this.visit(path, Buffer.concat([targetDir, name]), false, entryStats, entryOriginal, made);
        if (entryStats?.isDirectory()) subdirectories.push(visit);
        else await visit();
      }
    }
    return subdirectories;
  }

  /** True when the requester holds this file unchanged: it goes on `unchanged` instead of being copied. */
  private leftOutUnchanged(
    snapshotDir: string,
    text: string,
    stats: BigIntStats | null | undefined,
    held: ReadonlyMap<string, KnownFile> | null,
  ): boolean {
    const was = held?.get(text);
    if (
      was === undefined ||
      !stats?.isFile() ||
      stats.nlink > 1n || // copied, so that the backup sees its names as links of one inode
      stats.size !== was.size ||
      !sameMicrosecond(stats.mtimeNs, was.mtimeNs)
    )
      return false;
    this.unchanged.push({
      snapshotDir,
      name: text,
      mode: Number(stats.mode),
      uid: Number(stats.uid),
      gid: Number(stats.gid),
      size: Number(stats.size),
      mtimeNs: copyTimeNs(stats.mtimeNs),
    });
    return true;
  }

  /** Recreates a symlink with its owner (as root) and times; false when it vanished. */
  private async copySymlink(source: Path, target: Path, stats: BigIntStats): Promise<boolean> {
    let destination: Path;
    try {
      destination = await readlink(source, { encoding: 'buffer' });
    } catch (error) {
      if (isErrno(error, 'ENOENT', 'EINVAL')) return false;
      throw error;
    }
    await symlink(destination, target);
    if (this.asRoot) await lchown(target, Number(stats.uid), Number(stats.gid));
    await setTimesNs(target, stats.atimeNs, stats.mtimeNs, true);
    return true;
  }

  /**
   * The stats of a directory's entries. Read one after another on this thread while that is
   * quick (directories are listed the same way then): a local file system answers an lstat in
   * microseconds, where a round trip to the thread pool costs this thread tens of them. Once the
   * first few hundred average more than SLOW_STAT_MS (a slow disk, a network file system), the
   * rest of the walk reads them through the thread pool, a batch at once, so the reads overlap.
   */
  private async statBatch(paths: Path[]): Promise<(BigIntStats | null)[]> {
    if (!this.statsInline) return Promise.all(paths.map(statOrNull));
    const started = performance.now();
    const stats = paths.map(statOrNullNow);
    this.inlineStats.count += paths.length;
    this.inlineStats.ms += performance.now() - started;
    if (this.inlineStats.count >= 256 && this.inlineStats.ms > SLOW_STAT_MS * this.inlineStats.count)
      this.statsInline = false;
    return stats;
  }

  /**
   * Walks subdirectories, several at once while the whole copy has fewer than `DIRECTORY_WALKS`
   * under way (each directory is a few round trips: mkdir, readdir, the stats, the known files),
   * the rest one after another.
   */
  private async walkDirectories(visits: (() => Promise<boolean>)[]): Promise<void> {
    const parallel: Promise<boolean>[] = [];
    const inline: (() => Promise<boolean>)[] = [];
    for (const visit of visits) {
      if (this.walks < DIRECTORY_WALKS) {
        this.walks++;
        parallel.push(awaitedLater(visit().finally(() => this.walks--)));
      } else {
        inline.push(visit);
      }
    }
    let failure: { error: unknown } | undefined;
    try {
      for (const visit of inline) await visit();
    } catch (error) {
      failure = { error };
    }
    // The parallel walks end before this one does, failed or not: nothing is left writing.
    const settled = await Promise.allSettled(parallel);
    const rejected = settled.find((s) => s.status === 'rejected');
    failure ??= rejected === undefined ? undefined : { error: rejected.reason };
    if (failure !== undefined) throw failure.error;
  }

  /**
   * Waits for every file copy, then sets directory metadata (copying into a directory changes its
   * mtime, so never before). Once nothing more is made, the order does not matter: a few at once.
   */
  async finish(): Promise<void> {
    await this.settle();
    this.throwIfFailed();
    for (let from = 0; from < this.directories.length; from += STAT_BATCH) {
      await Promise.all(
        this.directories.slice(from, from + STAT_BATCH).map(({ target, stats }) => this.applyMetadata(target, stats)),
      );
    }
  }

  /** Waits for the copies under way; used before a failed tree is removed. */
  async settle(): Promise<void> {
    await this.copies.drain();
  }

  private async copyFile(source: Path, target: Path, stats: BigIntStats): Promise<void> {
    throwIfAborted(this.signal, 'copying the snapshot');
    if (stats.nlink > 1n) {
      const key = `${stats.dev}:${stats.ino}`;
      const first = this.linked.get(key);
      if (first !== undefined) {
        try {
          await link(await first, target);
          return;
        } catch (error) {
          if (!isErrno(error, 'ENOENT')) throw error; // the first name vanished: copy this one
        }
      }
      this.linked.set(
        key,
        this.copyData(source, target, stats).then(() => target),
      );
      await this.linked.get(key);
      return;
    }
    await this.copyData(source, target, stats);
  }

  private async copyData(source: Path, target: Path, stats: BigIntStats): Promise<void> {
    try {
      await copyFile(source, target, constants.COPYFILE_EXCL | this.cloneFlag);
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return; // deleted while we walked
      throw error;
    }
    await this.applyMetadata(target, stats, true);
  }

  /**
   * `copied`: a file made by copyFile, which already gave it the source's mode (libuv fchmods the
   * new file); only set-id bits, which chown clears, need a chmod then.
   */
  private async applyMetadata(target: Path, stats: BigIntStats, copied = false): Promise<void> {
    const mode = Number(stats.mode) & 0o7777;
    // chown first: it clears set-id bits that chmod then restores.
    if (this.asRoot) await lchown(target, Number(stats.uid), Number(stats.gid));
    if (!copied || (mode & 0o6000) !== 0) await chmod(target, mode);
    await setTimesNs(target, stats.atimeNs, stats.mtimeNs);
  }

  private async schedule(task: () => Promise<void>): Promise<void> {
    // Only a full queue is awaited: a file with room to start costs no turn of the event loop.
    if (this.copies.size >= this.copies.limit) await this.copies.room();
    this.throwIfFailed();
    this.copies.track(
      task().catch((error: unknown) => {
        this.failure ??= { error };
      }),
    );
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure.error;
  }
}

/** Entries of one directory whose stats are read at once. */
const STAT_BATCH = 32;
/** Directories walked at once in one copy. */
const DIRECTORY_WALKS = 8;

/** An inline lstat slower than this on average (ms) is a slow file system (see `statBatch`). */
const SLOW_STAT_MS = 0.2;

function statOrNullNow(path: Path): BigIntStats | null {
  try {
    return lstatSync(path, { bigint: true, throwIfNoEntry: false }) ?? null;
  } catch (error) {
    if (isErrno(error, 'ENOTDIR')) return null;
    throw error;
  }
}

async function statOrNull(path: Path): Promise<BigIntStats | null> {
  try {
    return await lstat(path, { bigint: true });
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return null;
    throw error;
  }
}

/** mkdir that accepts an existing directory (a mount point placeholder made by an earlier copy). */
async function makeDirectory(target: Path): Promise<void> {
  try {
    await mkdir(target, { mode: 0o700 });
  } catch (error) {
    if (!isErrno(error, 'EEXIST') || !(await lstat(target)).isDirectory()) throw error;
  }
}

/** A directory left out whole: it held nothing but unchanged files (and such directories). */
function unchangedDirectory(target: Path, original: string, stats: BigIntStats): UnchangedFile {
  const slash = target.lastIndexOf(0x2f);
  return {
    snapshotDir: decodeRawName(target.subarray(0, slash)),
    name: original.slice(original.lastIndexOf('/') + 1),
    mode: Number(stats.mode),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    size: 0,
    mtimeNs: copyTimeNs(stats.mtimeNs),
    directory: true,
  };
}

/** The mtime (ns) a copy of a file gets: the original's, to the nanosecond with the addon, else to the microsecond. */
function copyTimeNs(mtimeNs: bigint): string {
  return nativeFsAvailable() ? mtimeNs.toString() : copiedTimeNs(mtimeNs);
}

/** A directory's path ending in one slash, to put names after. */
function withSlash(dir: Path): Path {
  return dir.length > 0 && dir[dir.length - 1] === 0x2f ? dir : Buffer.concat([dir, SLASH]);
}
const SLASH = Buffer.from('/');

/**
 * Removes `path` and everything below it; a missing path is not an error. Read-only directories
 * (which a snapshot preserves) are made writable first when we are not root.
 */
export async function removeTree(path: string, options: CallOptions = {}): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true, maxRetries: 2 });
  } catch (error) {
    if (!isErrno(error, 'EACCES', 'EPERM')) throw error;
    await makeWritable(Buffer.from(path), options);
    await rm(path, { recursive: true, force: true, maxRetries: 2 });
  }
}

async function makeWritable(path: Path, options: CallOptions): Promise<void> {
  throwIfAborted(options.signal, 'removing the snapshot');
  try {
    const stats = await lstat(path);
    if (!stats.isDirectory()) return;
    await chmod(path, (stats.mode & 0o7777) | 0o700);
    for (const name of await readdir(path, { encoding: 'buffer' })) {
      await makeWritable(Buffer.concat([withSlash(path), name]), options);
    }
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
  }
}
