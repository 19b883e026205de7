import { lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import {
  decodeRawName,
  QuiesceError,
  rawPath,
  type ByteRange,
  type CallOptions,
  type UnchangedFile,
} from '../model/index.ts';
import { isFileSystemRoot, SNAPSHOT_STORE } from '../providers/index.ts';
import type { ContentRef, FileNode, ArchiverRepository, Tree, TreeNode } from '../repository/index.ts';
import { awaitedLater, InFlightLimit, isErrno } from '../util/index.ts';
import { FileSaver, type PendingContent } from './file-saver.ts';
import { hardLinkOf, HardLinkArchive } from './hard-links.ts';
import { LiveFiles } from './live-files.ts';
import { canReuseParentContent, isUnderAnyOf } from './parent-reuse.ts';
import { SmallFileBatcher } from './small-file-batcher.ts';
import { splicePlan } from './splice-plan.ts';
import { nodeMetadata, sameNodes, specialNode, type NodeMetadata } from './tree-nodes.ts';

/** Where one original path can be read, and how much of it must be read. */
export interface ArchiveSource {
  /** Absolute original path (what the tree records). */
  original: string;
  /**
   * Where to read it now (a snapshot path), or null for a file the snapshot does not hold: it is
   * left out even where an outer source is read in place (a writer's `-wal` that did not exist at the commit).
   */
  snapshot: string | null;
}

/** A file of which only some ranges changed since a base version already in the repository. */
export interface PartialSource {
  base: FileNode;
  size: number;
  ranges: ByteRange[];
}

export interface ArchiveOptions extends CallOptions {
  repository: ArchiverRepository;
  sources: ArchiveSource[];
  /** A previous tree: files under `parentPaths` whose size and mtime are unchanged reuse its content unread. */
  parentTree?: string | null;
  /** Original path prefixes where the parent may be trusted (plain paths, file components). */
  parentPaths?: string[];
  /** Only files with an mtime before this (ns) reuse the parent's content (see `canReuseParentContent`). */
  parentBefore?: bigint;
  /** Files the provider left out of the snapshot as unchanged since the parent: their content is the parent's. */
  unchanged?: readonly UnchangedFile[];
  /** Original file path -> what changed since its base. */
  partial?: Map<string, PartialSource>;
  onProgress?: (progress: ArchiveProgress) => void;
}

export interface ArchiveProgress {
  files: number;
  bytesRead: number;
  bytesAdded: number;
  currentPath: string;
}

export interface ArchiveResult {
  tree: string;
  files: number;
  dirs: number;
  bytesRead: number;
  bytesAdded: number;
  /** Files whose size and mtime matched the parent: content reused, nothing read. */
  unchangedFiles: number;
  /** Files stored from changed ranges only. */
  partialFiles: number;
  /** Files read in place (no snapshot holds them) that changed size or went while read: stored as read, or left out. */
  changedWhileRead: number;
}

/**
 * How many blob saves may be in flight, across files, before reading waits: keeps the compressing
 * workers busy through runs of small files while bounding memory to a few dozen chunks.
 */
const MAX_IN_FLIGHT = 8;

/** Directory entries walked at once, and so files being read at once (each with its own buffer). */
const ENTRY_CONCURRENCY = 8;

/** How many parent trees the walk keeps loaded before it starts again with none. */
const PARENT_CACHE_TREES = 256;

// The directory skeleton above the captured paths: original prefix -> children.
interface CapturedPathTree {
  children: Map<string, CapturedPathTree>;
  /** A captured path ends here. */
  source: ArchiveSource | null;
}

/**
 * Stores the given original paths, read from their snapshot locations, as one tree of
 * directories mirroring the original absolute paths (like restic). Every file node lists its
 * complete content, so the tree restores on its own: unchanged files reuse the parent's content
 * refs, and partial files splice re-read chunks into their base's content.
 */
export async function archive(options: ArchiveOptions): Promise<ArchiveResult> {
  const walk = new ArchiveWalk(options);
  walk.result.tree = await walk.archiveCaptured(
    capturedPathTree(options.sources),
    '',
    await walk.parentTreeOf(options.parentTree),
  );
  return walk.result;
}

function capturedPathTree(sources: readonly ArchiveSource[]): CapturedPathTree {
  const root: CapturedPathTree = { children: new Map(), source: null };
  for (const source of sources) {
    let node = root;
    for (const part of source.original.split('/').filter(Boolean)) {
      let child = node.children.get(part);
      if (!child) node.children.set(part, (child = { children: new Map(), source: null }));
      node = child;
    }
    node.source = source;
  }
  return root;
}

/** Snapshot directory -> the files left out of it, by name. */
function leftOutByDirectory(unchanged: readonly UnchangedFile[]): Map<string, Map<string, UnchangedFile>> {
  const leftOut = new Map<string, Map<string, UnchangedFile>>();
  for (const file of unchanged) {
    let files = leftOut.get(file.snapshotDir);
    if (files === undefined) leftOut.set(file.snapshotDir, (files = new Map<string, UnchangedFile>()));
    files.set(file.name, file);
  }
  return leftOut;
}

/** The state of one archive: its totals, its parent, and the savers its files go to. */
class ArchiveWalk {
  readonly result: ArchiveResult = {
    tree: '',
    files: 0,
    dirs: 0,
    bytesRead: 0,
    bytesAdded: 0,
    unchangedFiles: 0,
    partialFiles: 0,
    changedWhileRead: 0,
  };
  readonly repository: ArchiverRepository;
  // A source inside another (a database's file under a plain path) is read from its own snapshot
  // when the walk of the outer one reaches it.
  readonly sourceAt: Map<string, ArchiveSource>;
  readonly parentCache = new Map<string, Tree>();
  readonly parentUsable: (original: string) => boolean;
  readonly parentBefore: bigint;
  readonly leftOut: Map<string, Map<string, UnchangedFile>>;
  readonly small: SmallFileBatcher;
  readonly saver: FileSaver;
  readonly live: LiveFiles;
  /** The later names of a multiply-linked file take the first one's content. */
  readonly links = new HardLinkArchive(() => this.result.files++);

  constructor(readonly options: ArchiveOptions) {
    const { repository } = options;
    this.repository = repository;
    this.sourceAt = new Map(options.sources.map((s) => [s.original, s]));
    this.parentUsable = isUnderAnyOf(options.parentPaths ?? []);
    this.parentBefore = options.parentBefore ?? BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n;
    this.leftOut = leftOutByDirectory(options.unchanged ?? []);
    // Saves in flight across all files; a file's content refs are filled in as its saves finish.
    const inFlight = new InFlightLimit(MAX_IN_FLIGHT);
    this.small = new SmallFileBatcher(repository, options, this.result, inFlight, (original) =>
      this.progress(original),
    );
    this.saver = new FileSaver(repository, options, this.result, inFlight, ENTRY_CONCURRENCY);
    this.live = new LiveFiles(this.saver, () => this.result.changedWhileRead++);
  }

  progress(currentPath: string): void {
    this.options.onProgress?.({
      files: this.result.files,
      bytesRead: this.result.bytesRead,
      bytesAdded: this.result.bytesAdded,
      currentPath,
    });
  }

  async parentTreeOf(id: string | null | undefined): Promise<Tree | null> {
    if (!id) return null;
    let tree = this.parentCache.get(id);
    if (!tree) {
      tree = await this.repository.loadTree(id, this.options);
      if (this.parentCache.size > PARENT_CACHE_TREES) this.parentCache.clear();
      this.parentCache.set(id, tree);
    }
    return tree;
  }

  async saveTree(nodes: TreeNode[]): Promise<string> {
    nodes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const saved = await this.repository.saveTree({ nodes }, this.options);
    this.result.bytesAdded += saved.storedBytes;
    this.result.dirs++;
    return saved.id;
  }

  /** The directories above and at the captured paths, as a tree. */
  async archiveCaptured(captured: CapturedPathTree, original: string, parent: Tree | null): Promise<string> {
    const nodes: TreeNode[] = [];
    for (const [name, child] of [...captured.children].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const childOriginal = `${original}/${name}`;
      const parentNode = parent?.nodes.find((n) => n.name === name) ?? null;
      // A captured path: everything below it is in its snapshot, nested captured paths included.
      if (child.source) {
        if (child.source.snapshot === null) continue;
        const waits: Promise<void>[] = [];
        const node = await this.archivePath(child.source.snapshot, childOriginal, name, parentNode, waits);
        void this.small.send();
        await Promise.all(waits);
        if (node) nodes.push(node);
        continue;
      }
      // A directory above captured paths: its metadata comes from the original (it is not in any snapshot).
      const stats = await lstat(childOriginal, { bigint: true }).catch(() => null);
      const subParent = parentNode?.type === 'dir' ? await this.parentTreeOf(parentNode.subtree) : null;
      const subtree = await this.archiveCaptured(child, childOriginal, subParent);
      nodes.push({ ...nodeMetadata(name, stats), type: 'dir', subtree });
    }
    return this.saveTree(nodes);
  }

  /** One path of the snapshot as a node; a file's pending saves go into `waits`, which its directory awaits. */
  async archivePath(
    path: string,
    original: string,
    name: string,
    parentNode: TreeNode | null,
    waits: Promise<void>[],
  ): Promise<TreeNode | null> {
    this.options.signal?.throwIfAborted();
    let stats: BigIntStats;
    try {
      stats = await lstat(rawPath(path), { bigint: true });
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return null; // vanished: not in the snapshot
      throw error;
    }
    if (stats.isSymbolicLink()) {
      const target = decodeRawName(await readlink(rawPath(path), { encoding: 'buffer' }));
      return { ...nodeMetadata(name, stats), type: 'symlink', target };
    }
    if (stats.isDirectory()) return this.archiveDirectory(path, original, nodeMetadata(name, stats), parentNode, true);
    if (!stats.isFile()) return specialNode(name, stats); // FIFOs, sockets, devices: their metadata
    const base = nodeMetadata(name, stats);
    const file = (fileWaits: Promise<void>[]) =>
      this.archiveFile(path, original, base, Number(stats.size), parentNode, fileWaits);
    const identity = hardLinkOf(stats);
    return identity === undefined ? file(waits) : this.links.node(identity, base, waits, file);
  }

  async archiveFile(
    path: string,
    original: string,
    base: NodeMetadata,
    fileSize: number,
    parentNode: TreeNode | null,
    waits: Promise<void>[],
  ): Promise<FileNode> {
    const { repository, result } = this;
    result.files++;
    const partial = this.options.partial?.get(original);
    if (partial && partial.size === fileSize && partial.base.content.every((c) => repository.hasBlob(c.id))) {
      const { refs, done } = await this.spliceFile(path, partial, original);
      waits.push(done);
      result.partialFiles++;
      this.progress(original);
      return { ...base, type: 'file', size: fileSize, content: refs };
    }
    if (
      this.parentUsable(original) &&
      canReuseParentContent(repository, parentNode, fileSize, base.mtimeNs, this.parentBefore)
    ) {
      result.unchangedFiles++;
      this.progress(original);
      return { ...base, type: 'file', size: fileSize, content: parentNode.content };
    }
    // Read in place (no snapshot holds it): the file may change or go while it is read.
    const live = path === original;
    if (fileSize > 0 && fileSize <= this.small.maxSize) {
      const ref: ContentRef = { id: '', length: fileSize };
      const node: FileNode = { ...base, type: 'file', size: fileSize, content: [ref] };
      const stored = this.small.store(path, fileSize, original, ref);
      waits.push(live ? awaitedLater(stored.catch(() => this.live.reread(path, original, node))) : stored);
      return node;
    }
    // A file the parent set did not have is most likely new content: named on the workers.
    const likelyNew = parentNode?.type !== 'file';
    const read = live
      ? await this.live.read(path, fileSize, original, likelyNew)
      : await this.saver.readAndStore(path, 0, fileSize, original, likelyNew);
    this.progress(original);
    if (read === null) return this.live.vanished({ ...base, type: 'file', size: 0, content: [] });
    waits.push(read.done);
    if (read.length !== fileSize) this.result.changedWhileRead++;
    return { ...base, type: 'file', size: read.length, content: read.refs };
  }

  /**
   * A directory as a node: its entries in the snapshot (`inSnapshot`; else the provider left it
   * out whole) and those the provider left out. A directory equal to its parent's, entry for
   * entry, is the parent's subtree: nothing to write or even hash.
   */
  async archiveDirectory(
    path: string,
    original: string,
    dirMeta: NodeMetadata,
    parentNode: TreeNode | null,
    inSnapshot: boolean,
  ): Promise<TreeNode> {
    const subParent = parentNode?.type === 'dir' ? await this.parentTreeOf(parentNode.subtree) : null;
    const parentByName = new Map((subParent?.nodes ?? []).map((n) => [n.name, n]));
    const notCopied = this.leftOut.get(path);
    const read = inSnapshot ? await snapshotEntries(path) : [];
    const entries = notCopied === undefined ? read.sort() : [...new Set([...read, ...notCopied.keys()])].sort();
    const children: (TreeNode | null)[] = new Array<TreeNode | null>(entries.length).fill(null);
    const childWaits: Promise<void>[] = [];
    // A few entries at a time: a run of small files is a run of open/read/close round trips.
    let next = 0;
    const walker = async () => {
      while (next < entries.length) {
        const i = next++;
        const entry = entries[i]!;
        const file = notCopied?.get(entry);
        if (file !== undefined && !file.directory) {
          children[i] = this.unchangedNode(file, parentByName.get(entry), `${original}/${entry}`);
          continue;
        }
        children[i] = await this.archiveEntry(path, original, entry, file, parentByName.get(entry) ?? null, childWaits);
      }
    };
    await Promise.all(Array.from({ length: Math.min(ENTRY_CONCURRENCY, entries.length) }, walker));
    void this.small.send();
    await Promise.all(childWaits);
    const nodes = children.filter((n): n is TreeNode => n !== null && !this.live.isGone(n));
    if (
      parentNode?.type === 'dir' &&
      subParent !== null &&
      sameNodes(nodes, subParent.nodes) &&
      this.repository.hasBlob(parentNode.subtree)
    ) {
      this.result.dirs++;
      return { ...dirMeta, type: 'dir', subtree: parentNode.subtree };
    }
    return { ...dirMeta, type: 'dir', subtree: await this.saveTree(nodes) };
  }

  /** One entry of a directory read from the snapshot, or a directory the provider left out whole (`left`). */
  archiveEntry(
    path: string,
    original: string,
    entry: string,
    left: UnchangedFile | undefined,
    parentNode: TreeNode | null,
    childWaits: Promise<void>[],
  ): Promise<TreeNode | null> {
    if (left?.directory) {
      const { name: dirName, mode, uid, gid, mtimeNs } = left;
      return this.archiveDirectory(
        join(path, entry),
        `${original}/${entry}`,
        { name: dirName, mode, uid, gid, mtimeNs },
        parentNode,
        false,
      );
    }
    const childOriginal = `${original}/${entry}`;
    const source = this.sourceAt.get(childOriginal);
    if (source?.snapshot === null) return Promise.resolve(null);
    const snapshot = source?.snapshot ?? join(path, entry);
    return this.archivePath(snapshot, childOriginal, entry, parentNode, childWaits);
  }

  /** A file the provider left out: the parent's content, with the original's metadata at the commit. */
  unchangedNode(file: UnchangedFile, parentNode: TreeNode | undefined, original: string): TreeNode {
    if (!canReuseParentContent(this.repository, parentNode, file.size, file.mtimeNs, this.parentBefore)) {
      throw new QuiesceError(
        'inconsistent-snapshot',
        `${original} was left out of the snapshot as unchanged, but the parent set does not hold it as it is now`,
        { component: original },
      );
    }
    this.result.files++;
    this.result.unchangedFiles++;
    this.progress(original);
    return {
      name: file.name,
      mode: file.mode,
      uid: file.uid,
      gid: file.gid,
      mtimeNs: file.mtimeNs,
      type: 'file',
      size: file.size,
      content: parentNode.content,
    };
  }

  /**
   * The new content of a file of which only some ranges changed since its base (see
   * `splicePlan`): the changed spans are re-read and re-chunked from the snapshot, the untouched
   * chunks reused as they are. Returns the complete content, in order.
   */
  async spliceFile(path: string, partial: PartialSource, original: string): Promise<PendingContent> {
    const content: ContentRef[] = [];
    const dones: Promise<void>[] = [];
    for (const step of splicePlan(partial.base.content, partial.size, partial.ranges)) {
      if (step.kind === 'keep') {
        content.push(step.ref);
        continue;
      }
      const part = await this.saver.readAndStore(path, step.offset, step.length, original);
      content.push(...part.refs);
      dones.push(part.done);
    }
    return { refs: content, done: awaitedLater(Promise.all(dones).then(() => undefined)), length: partial.size };
  }
}

/**
 * A snapshot directory's entries, names as `decodeRawName` gives them (bytes not UTF-8 escaped),
 * without a provider's snapshot store (`<root>/.quiesce-snapshots`, only at a file system's root).
 */
async function snapshotEntries(path: string): Promise<string[]> {
  const names = (await readdir(rawPath(path), { encoding: 'buffer' })).map(decodeRawName);
  const store = names.indexOf(SNAPSHOT_STORE);
  if (store >= 0 && (await isFileSystemRoot(rawPath(path)))) names.splice(store, 1);
  return names;
}
