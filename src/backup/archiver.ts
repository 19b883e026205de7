import { open, lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { QuiesceError, type ByteRange, type CallOptions, type UnchangedFile } from '../model/index.ts';
import type { ContentRef, FileNode, Tree, TreeNode } from '../repository/tree.ts';
import type { Chunker, Repository } from '../repository/index.ts';
import { reusable, trustedBy } from './known-files.ts';

/** Where one original path can be read, and how much of it must be read. */
export interface ArchiveSource {
  /** Absolute original path (what the tree records). */
  original: string;
  /** Where to read it now (a snapshot path). */
  snapshot: string;
}

/** A file of which only some ranges changed since a base version already in the repository. */
export interface PartialSource {
  base: FileNode;
  size: number;
  ranges: ByteRange[];
}

export interface ArchiveOptions extends CallOptions {
  repository: Repository;
  sources: ArchiveSource[];
  /** A previous tree: files under `parentPaths` whose size and mtime are unchanged reuse its content unread. */
  parentTree?: string | null;
  /** Original path prefixes where the parent may be trusted (plain paths, file components). */
  parentPaths?: string[];
  /** Only files with an mtime before this (ns) reuse the parent's content (see `reusable`). */
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
}

/**
 * How many blob saves may be in flight, across files, before reading waits: keeps the compressing
 * workers busy through runs of small files while bounding memory to a few dozen chunks.
 */
const MAX_IN_FLIGHT = 8;

/** Directory entries walked at once, and so files being read at once (each with its own buffer). */
const ENTRY_CONCURRENCY = 8;

/** A batch of small files goes to a worker at this many files or bytes, or when its directory is walked. */
const SMALL_BATCH_FILES = 64;
const SMALL_BATCH_BYTES = 1024 * 1024;
const SMALL_BATCH_WAIT_MS = 20;

/**
 * Stores the given original paths, read from their snapshot locations, as one tree of
 * directories mirroring the original absolute paths (like restic). Every file node lists its
 * complete content, so the tree restores on its own: unchanged files reuse the parent's content
 * refs, and partial files splice re-read chunks into their base's content.
 */
export async function archive(options: ArchiveOptions): Promise<ArchiveResult> {
  const { repository } = options;
  const result: ArchiveResult = {
    tree: '',
    files: 0,
    dirs: 0,
    bytesRead: 0,
    bytesAdded: 0,
    unchangedFiles: 0,
    partialFiles: 0,
  };
  const progress = (currentPath: string) =>
    options.onProgress?.({
      files: result.files,
      bytesRead: result.bytesRead,
      bytesAdded: result.bytesAdded,
      currentPath,
    });

  // The directory skeleton above the captured paths: original prefix -> children.
  interface Skeleton {
    children: Map<string, Skeleton>;
    /** A captured path ends here. */
    source: ArchiveSource | null;
  }
  const root: Skeleton = { children: new Map(), source: null };
  // A source inside another (a database's file under a plain path) is read from its own snapshot
  // when the walk of the outer one reaches it.
  const sourceAt = new Map(options.sources.map((s) => [s.original, s]));
  for (const source of options.sources) {
    let node = root;
    for (const part of source.original.split('/').filter(Boolean)) {
      let child = node.children.get(part);
      if (!child) node.children.set(part, (child = { children: new Map(), source: null }));
      node = child;
    }
    node.source = source;
  }

  const parentCache = new Map<string, Tree>();
  async function parentTreeOf(id: string | null | undefined): Promise<Tree | null> {
    if (!id) return null;
    let tree = parentCache.get(id);
    if (!tree) {
      tree = await repository.loadTree(id, options);
      if (parentCache.size > 256) parentCache.clear();
      parentCache.set(id, tree);
    }
    return tree;
  }
  const parentUsable = trustedBy(options.parentPaths ?? []);
  const parentBefore = options.parentBefore ?? BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n;
  // Snapshot directory -> the files left out of it, by name.
  const leftOut = new Map<string, Map<string, UnchangedFile>>();
  for (const file of options.unchanged ?? []) {
    let files = leftOut.get(file.snapshotDir);
    if (files === undefined) leftOut.set(file.snapshotDir, (files = new Map<string, UnchangedFile>()));
    files.set(file.name, file);
  }

  async function saveTree(nodes: TreeNode[]): Promise<string> {
    nodes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const saved = await repository.saveTree({ nodes }, options);
    result.bytesAdded += saved.storedBytes;
    result.dirs++;
    return saved.id;
  }

  async function archiveSkeleton(skeleton: Skeleton, original: string, parent: Tree | null): Promise<string> {
    const nodes: TreeNode[] = [];
    for (const [name, child] of [...skeleton.children].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const childOriginal = `${original}/${name}`;
      const parentNode = parent?.nodes.find((n) => n.name === name) ?? null;
      // A captured path: everything below it is in its snapshot, nested captured paths included.
      if (child.source) {
        const waits: Promise<void>[] = [];
        const node = await archivePath(child.source.snapshot, childOriginal, name, parentNode, waits);
        void sendSmall();
        await Promise.all(waits);
        if (node) nodes.push(node);
        continue;
      }
      // A directory above captured paths: its metadata comes from the original (it is not in any snapshot).
      const stats = await lstat(childOriginal, { bigint: true }).catch(() => null);
      const subParent = parentNode?.type === 'dir' ? await parentTreeOf(parentNode.subtree) : null;
      const subtree = await archiveSkeleton(child, childOriginal, subParent);
      nodes.push({ ...meta(name, stats), type: 'dir', subtree });
    }
    return saveTree(nodes);
  }

  /** One path of the snapshot as a node; a file's pending saves go into `waits`, which its directory awaits. */
  async function archivePath(
    path: string,
    original: string,
    name: string,
    parentNode: TreeNode | null,
    waits: Promise<void>[],
  ): Promise<TreeNode | null> {
    options.signal?.throwIfAborted();
    let stats: BigIntStats;
    try {
      stats = await lstat(path, { bigint: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null; // vanished: not in the snapshot
      throw error;
    }
    if (stats.isSymbolicLink()) {
      return { ...meta(name, stats), type: 'symlink', target: await readlink(path) };
    }
    if (stats.isDirectory()) return archiveDirectory(path, original, meta(name, stats), parentNode, true);
    if (!stats.isFile()) return null; // sockets, fifos, devices are not backed up
    result.files++;
    const fileSize = Number(stats.size);
    const base = meta(name, stats);
    const partial = options.partial?.get(original);
    if (partial && partial.size === fileSize && partial.base.content.every((c) => repository.hasBlob(c.id))) {
      const { refs, done } = await spliceFile(path, partial, original);
      waits.push(done);
      result.partialFiles++;
      progress(original);
      return { ...base, type: 'file', size: fileSize, content: refs };
    }
    if (parentUsable(original) && reusable(repository, parentNode, fileSize, base.mtimeNs, parentBefore)) {
      result.unchangedFiles++;
      progress(original);
      return { ...base, type: 'file', size: fileSize, content: parentNode.content };
    }
    if (fileSize > 0 && fileSize <= smallLimit) {
      const ref: ContentRef = { id: '', length: fileSize };
      waits.push(storeSmall(path, fileSize, original, ref));
      return { ...base, type: 'file', size: fileSize, content: [ref] };
    }
    // A file the parent set did not have is most likely new content: named on the workers.
    const { refs, done } = await readAndStore(path, 0, fileSize, original, parentNode?.type !== 'file');
    waits.push(done);
    progress(original);
    return { ...base, type: 'file', size: fileSize, content: refs };
  }

  /**
   * A directory as a node: its entries in the snapshot (`inSnapshot`; else the provider left it
   * out whole) and those the provider left out. A directory equal to its parent's, entry for
   * entry, is the parent's subtree: nothing to write or even hash.
   */
  async function archiveDirectory(
    path: string,
    original: string,
    dirMeta: ReturnType<typeof meta>,
    parentNode: TreeNode | null,
    inSnapshot: boolean,
  ): Promise<TreeNode> {
    const subParent = parentNode?.type === 'dir' ? await parentTreeOf(parentNode.subtree) : null;
    const parentByName = new Map((subParent?.nodes ?? []).map((n) => [n.name, n]));
    const notCopied = leftOut.get(path);
    const read = inSnapshot ? (await readdir(path)).filter((entry) => entry !== '.quiesce-snapshots') : [];
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
        if (file?.directory) {
          const { name: dirName, mode, uid, gid, mtimeNs } = file;
          children[i] = await archiveDirectory(
            join(path, entry),
            `${original}/${entry}`,
            { name: dirName, mode, uid, gid, mtimeNs },
            parentByName.get(entry) ?? null,
            false,
          );
          continue;
        }
        if (file !== undefined) {
          children[i] = unchangedNode(file, parentByName.get(entry), `${original}/${entry}`);
          continue;
        }
        const childOriginal = `${original}/${entry}`;
        const snapshot = sourceAt.get(childOriginal)?.snapshot ?? join(path, entry);
        children[i] = await archivePath(snapshot, childOriginal, entry, parentByName.get(entry) ?? null, childWaits);
      }
    };
    await Promise.all(Array.from({ length: Math.min(ENTRY_CONCURRENCY, entries.length) }, walker));
    void sendSmall();
    await Promise.all(childWaits);
    const nodes = children.filter((n): n is TreeNode => n !== null);
    if (
      parentNode?.type === 'dir' &&
      subParent !== null &&
      sameNodes(nodes, subParent.nodes) &&
      repository.hasBlob(parentNode.subtree)
    ) {
      result.dirs++;
      return { ...dirMeta, type: 'dir', subtree: parentNode.subtree };
    }
    return { ...dirMeta, type: 'dir', subtree: await saveTree(nodes) };
  }

  // Small files (one chunk each) go to the encoding workers whole, many to a batch: they read,
  // name and seal them there, and no file I/O for them costs the main thread a round trip.
  const smallLimit = repository.createChunker().minSize ?? 0;
  let batch: { path: string; size: number; original: string; ref: ContentRef; settle: (error?: Error) => void }[] = [];
  let batchBytes = 0;
  function storeSmall(path: string, size: number, original: string, ref: ContentRef): Promise<void> {
    const stored = new Promise<void>((resolve, reject) => {
      batch.push({ path, size, original, ref, settle: (error) => (error === undefined ? resolve() : reject(error)) });
    });
    stored.catch(() => undefined); // awaited by the directory; never an unhandled rejection meanwhile
    batchBytes += size;
    if (batch.length >= SMALL_BATCH_FILES || batchBytes >= SMALL_BATCH_BYTES) void sendSmall();
    // Whoever waits for these files sends the batch first; this timer only makes sure it goes.
    else if (batch.length === 1) setTimeout(() => void sendSmall(), SMALL_BATCH_WAIT_MS);
    return stored;
  }
  /** Sends the batch so far; a directory calls it before it waits for its files. */
  async function sendSmall(): Promise<void> {
    if (batch.length === 0) return;
    const files = batch;
    batch = [];
    batchBytes = 0;
    await throttle();
    const sending = (async () => {
      try {
        const results = await repository.saveSmallFiles(
          files.map(({ path, size }) => ({ path, size })),
          options,
        );
        files.forEach((file, i) => {
          const saved = results[i]!;
          if ('error' in saved) {
            const error =
              saved.code === 'CHANGED'
                ? new QuiesceError(
                    'inconsistent-snapshot',
                    `${file.original} changed while it was read from the snapshot: ${saved.error}`,
                    { component: file.original },
                  )
                : new QuiesceError('nonretryable', `cannot read ${file.original} from the snapshot: ${saved.error}`, {
                    component: file.original,
                  });
            file.settle(error);
            return;
          }
          file.ref.id = saved.id;
          result.bytesRead += file.size;
          result.bytesAdded += saved.storedBytes;
          file.settle();
        });
        progress(files.at(-1)!.original);
      } catch (error) {
        for (const file of files) file.settle(error instanceof Error ? error : new Error(String(error)));
      }
    })();
    const tracked = sending.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    await sending;
  }

  /** A file the provider left out: the parent's content, with the original's metadata at the commit. */
  function unchangedNode(file: UnchangedFile, parentNode: TreeNode | undefined, original: string): TreeNode {
    if (!reusable(repository, parentNode, file.size, file.mtimeNs, parentBefore)) {
      throw new QuiesceError(
        'inconsistent-snapshot',
        `${original} was left out of the snapshot as unchanged, but the parent set does not hold it as it is now`,
        { component: original },
      );
    }
    result.files++;
    result.unchangedFiles++;
    progress(original);
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

  // A read buffer and a chunker per file being read, shared by the whole archive (the chunker
  // copies what it keeps, and its carry buffer lives as long as it does).
  interface Reader {
    buffer: Buffer;
    chunker: Chunker;
  }
  const readers: Reader[] = Array.from({ length: ENTRY_CONCURRENCY }, () => ({
    buffer: Buffer.allocUnsafe(1 << 20),
    // Chunks go into the repository's recycled buffers, which move to the encoding workers whole.
    chunker: repository.createChunker(),
  }));
  const readerWaiters: ((reader: Reader) => void)[] = [];
  async function takeReader(): Promise<Reader> {
    return readers.pop() ?? new Promise<Reader>((resolve) => readerWaiters.push(resolve));
  }
  function giveReader(reader: Reader): void {
    reader.chunker.reset();
    const waiter = readerWaiters.shift();
    if (waiter) waiter(reader);
    else readers.push(reader);
  }

  // Saves in flight across all files; a file's content refs are filled in as its saves finish.
  const inFlight = new Set<Promise<void>>();
  async function throttle(): Promise<void> {
    while (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
  }

  /**
   * Reads [offset, offset+length) of a file, chunks it with a fresh chunker and starts storing the
   * chunks (`likelyNew`: see `SaveBlobOptions`). Returns the content refs (their ids are filled
   * in as the saves finish) and `done`, which settles when they all have: the directory holding
   * the file awaits it before its tree is saved, so reading the next files overlaps with
   * compressing and sealing this one.
   */
  async function readAndStore(
    path: string,
    offset: number,
    length: number,
    original: string,
    likelyNew = false,
  ): Promise<{ refs: ContentRef[]; done: Promise<void> }> {
    const handle = await open(path, 'r').catch((error: unknown) => {
      throw QuiesceError.from(error, 'nonretryable', { component: original });
    });
    const refs: ContentRef[] = [];
    const saves: Promise<void>[] = [];
    const saveOptions = { ...options, likelyNew };
    const store = async (chunk: Uint8Array) => {
      await throttle();
      const ref: ContentRef = { id: '', length: chunk.length };
      refs.push(ref);
      const saving = repository.saveBlob('data', chunk, saveOptions).then((saved) => {
        ref.id = saved.id;
        result.bytesAdded += saved.storedBytes;
      });
      const tracked = saving.finally(() => inFlight.delete(tracked));
      tracked.catch(() => undefined);
      inFlight.add(tracked);
      saves.push(saving);
    };
    const reader = await takeReader();
    const { buffer, chunker } = reader;
    try {
      let position = offset;
      const end = offset + length;
      while (position < end) {
        options.signal?.throwIfAborted();
        const want = Math.min(buffer.length, end - position);
        const { bytesRead } = await handle.read(buffer, 0, want, position);
        if (bytesRead === 0)
          throw new QuiesceError('inconsistent-snapshot', `${original} shrank while it was read from the snapshot`, {
            component: original,
          });
        position += bytesRead;
        result.bytesRead += bytesRead;
        // The chunker copies what it keeps and returns fresh chunks: the read buffer is reused as it is.
        for (const chunk of chunker.update(buffer.subarray(0, bytesRead))) await store(chunk);
      }
      for (const chunk of chunker.finish()) await store(chunk);
    } catch (error) {
      await Promise.allSettled(saves);
      throw error;
    } finally {
      giveReader(reader);
      await handle.close();
    }
    const done = Promise.all(saves).then(() => undefined);
    done.catch(() => undefined); // awaited by the directory; never an unhandled rejection meanwhile
    return { refs, done };
  }

  /**
   * The new content of a file of which only `ranges` changed since `base`: every base chunk
   * that overlaps a changed range (or lies past the old end) is re-read and re-chunked from the
   * snapshot, cut at the untouched neighbours' boundaries; the untouched chunks are reused as
   * they are. Returns the complete content, in order.
   */
  async function spliceFile(
    path: string,
    partial: PartialSource,
    original: string,
  ): Promise<{ refs: ContentRef[]; done: Promise<void> }> {
    const { base, size } = partial;
    const starts: number[] = [];
    let offset = 0;
    for (const ref of base.content) {
      starts.push(offset);
      offset += ref.length;
    }
    const changed = new Set<number>();
    for (const range of partial.ranges) {
      const from = range.offset;
      const to = Math.min(size, range.offset + range.length);
      base.content.forEach((ref, i) => {
        const s = starts[i]!;
        if (s < to && s + ref.length > from) changed.add(i);
      });
    }
    // A base chunk that the new size cuts short, or any past the new end, is changed too.
    base.content.forEach((ref, i) => {
      if (starts[i]! + ref.length > size) changed.add(i);
    });
    const content: ContentRef[] = [];
    const dones: Promise<void>[] = [];
    let i = 0;
    while (i < base.content.length) {
      if (!changed.has(i)) {
        content.push(base.content[i]!);
        i++;
        continue;
      }
      let j = i;
      while (j + 1 < base.content.length && changed.has(j + 1)) j++;
      const from = starts[i]!;
      const to = Math.min(size, starts[j]! + base.content[j]!.length);
      if (to > from) {
        const part = await readAndStore(path, from, to - from, original);
        content.push(...part.refs);
        dones.push(part.done);
      }
      i = j + 1;
    }
    if (size > offset) {
      const part = await readAndStore(path, offset, size - offset, original);
      content.push(...part.refs);
      dones.push(part.done);
    }
    const done = Promise.all(dones).then(() => undefined);
    done.catch(() => undefined);
    return { refs: content, done };
  }

  result.tree = await archiveSkeleton(root, '', await parentTreeOf(options.parentTree));
  return result;
}

/** Are two sorted lists of nodes the same, so that they make the same tree? */
function sameNodes(a: readonly TreeNode[], b: readonly TreeNode[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (
      x.name !== y.name ||
      x.type !== y.type ||
      x.mode !== y.mode ||
      x.uid !== y.uid ||
      x.gid !== y.gid ||
      x.mtimeNs !== y.mtimeNs
    )
      return false;
    if (x.type === 'dir' && x.subtree !== (y as typeof x).subtree) return false;
    if (x.type === 'symlink' && x.target !== (y as typeof x).target) return false;
    if (x.type === 'file') {
      const other = y as typeof x;
      if (x.size !== other.size || x.content.length !== other.content.length) return false;
      if (
        x.content !== other.content &&
        x.content.some((c, k) => c.id !== other.content[k]!.id || c.length !== other.content[k]!.length)
      )
        return false;
    }
  }
  return true;
}

/** The common metadata of a node; `stats` null (an original parent that vanished) gives a plain directory. */
function meta(
  name: string,
  stats: BigIntStats | null,
): { name: string; mode: number; uid: number; gid: number; mtimeNs: string } {
  if (!stats) return { name, mode: 0o40755, uid: 0, gid: 0, mtimeNs: '0' };
  return {
    name,
    mode: Number(stats.mode),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    mtimeNs: stats.mtimeNs.toString(),
  };
}

/** Finds the node of an original absolute path in a tree. */
export async function findNode(
  repository: Repository,
  tree: string,
  original: string,
  options: CallOptions = {},
): Promise<TreeNode | null> {
  const parts = original.split('/').filter(Boolean);
  let current = tree;
  for (let i = 0; i < parts.length; i++) {
    const node = (await repository.loadTree(current, options)).nodes.find((n) => n.name === parts[i]);
    if (!node) return null;
    if (i === parts.length - 1) return node;
    if (node.type !== 'dir') return null;
    current = node.subtree;
  }
  return null;
}
