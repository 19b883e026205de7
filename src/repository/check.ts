import { QuiesceError, type CallOptions } from '../model/index.ts';
import { messageOf } from '../util/index.ts';
import { indexPacks } from './blob-index.ts';
import { readBlob, verifyBlob } from './blob-reader.ts';
import { sha256Hex } from './crypto/keys.ts';
import { isNotFound } from './storage-error.ts';
import { loadAllIndexes, type IndexedPack } from './index-file.ts';
import { readPackHeaderFromBytes } from './pack-file.ts';
import { parseTree } from './tree-blob.ts';
import type { RepositoryInternals } from './repository-internals.ts';
import { SetShapes } from './set-shape-check.ts';
import { filesUsing, visitTrees } from './tree-walk.ts';
import type { Tree } from './tree.ts';

export interface CheckOptions extends CallOptions {
  readData?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface CheckProblem {
  kind:
    | 'missing-pack'
    | 'damaged-pack'
    | 'damaged-blob'
    | 'missing-blob'
    | 'damaged-index'
    | 'damaged-key'
    | 'damaged-manifest'
    | 'damaged-tree'
    | 'unreferenced-pack'
    // A set beyond what a restore takes (see tree-bounds.ts); a tree used by more than one path in a set (information).
    | 'oversized-set'
    | 'shared-tree';
  /** The object (pack, blob, manifest, tree) concerned. */
  object: string;
  message: string;
  /** For a damaged or missing data blob: the files that use it, as `<setId>:<path>`. */
  files?: string[];
}

export interface CheckReport {
  ok: boolean;
  manifests: number;
  trees: number;
  blobs: number;
  packs: number;
  bytesRead: number;
  problems: CheckProblem[];
}

/** One check's state: what it reads through, and what it found so far. */
interface CheckRun {
  readonly ctx: RepositoryInternals;
  readonly options: CheckOptions;
  readonly problems: CheckProblem[];
  bytesRead: number;
}

type IndexedPacks = ReturnType<typeof indexPacks>;
type SetRoot = { setId: string; tree: string };

/**
 * Proves the repository's structure, and with `readData` every byte of it:
 * config and keys open; every index opens; every pack an index names exists with its size;
 * every manifest opens; every tree reachable from them loads and every blob it names is indexed;
 * with `readData`, every pack hashes to its name and every blob in it opens and matches its id.
 * Damaged or missing data blobs list the files that use them. Packs that no index names
 * (left by a crash) are reported but are not damage: prune removes them after the grace period.
 * A set beyond a restore's bounds is damage; trees a set reaches by more than one path are
 * reported as information (see set-shape-check.ts).
 */
export async function checkRepository(ctx: RepositoryInternals, options: CheckOptions = {}): Promise<CheckReport> {
  const { backend, keys } = ctx;
  const run: CheckRun = { ctx, options, problems: [], bytesRead: 0 };

  // The config opens with our keys (openRepository proved a key opens with the password).
  await ctx.verifyConfig(options);
  await checkKeyFiles(run);

  const { files: indexFiles, damaged } = await loadAllIndexes(backend, keys.encryption, options);
  for (const bad of damaged) run.problems.push({ kind: 'damaged-index', object: bad.name, message: bad.message });
  const { packs, index } = indexPacks(indexFiles);
  const { stored, missingPacks } = await checkPackFiles(run, packs);
  const sets = await loadSets(run);

  // Trees load through the index we just read (not the session's), so check sees the repository as stored.
  const loadTree = async (id: string): Promise<Tree> => {
    const location = index.get(id);
    if (location === undefined) throw new QuiesceError('damaged', `tree ${id} is not in the index`);
    const bytes = await readBlob(backend, keys, id, location, options);
    run.bytesRead += bytes.length;
    return parseTree(id, bytes);
  };
  const shapes = new SetShapes();
  const { trees, dataRefs } = await walkTrees(run, index, sets, loadTree, shapes);
  run.problems.push(...(await shapes.problems(sets)));
  const lost = lostBlobs(index, dataRefs, missingPacks);
  if (options.readData === true)
    await readAllData(
      run,
      [...packs.values()].filter((p) => stored.has(p.id)),
      dataRefs,
      lost,
    );

  if (lost.size > 0) {
    const files = await filesUsing(sets, new Set(lost.keys()), loadTree);
    for (const [id, problem] of lost) run.problems.push({ ...problem, files: files.get(id) ?? [] });
  }

  return {
    ok: run.problems.every((p) => p.kind === 'unreferenced-pack' || p.kind === 'shared-tree'),
    manifests: sets.length,
    trees: trees.size,
    blobs: index.blobCount,
    packs: packs.size,
    bytesRead: run.bytesRead,
    problems: run.problems,
  };
}

/** Every key file still hashes to its name (a changed one may no longer open with its password). */
async function checkKeyFiles(run: CheckRun): Promise<void> {
  const { backend } = run.ctx;
  for await (const info of backend.list('keys', run.options)) {
    let bytes: Buffer;
    try {
      bytes = await backend.load('keys', info.name, run.options);
    } catch (error) {
      if (isNotFound(error)) continue; // removed since the listing
      throw error;
    }
    if (sha256Hex(bytes) !== info.name)
      run.problems.push({
        kind: 'damaged-key',
        object: info.name,
        message: `key file keys/${info.name} is damaged: its bytes no longer match its name (SHA-256); add a password again (quiesce key add) and remove this key`,
      });
  }
}

/** Every pack an index names is stored at its size; a stored pack no index names is reported. */
async function checkPackFiles(
  run: CheckRun,
  packs: IndexedPacks['packs'],
): Promise<{ stored: Map<string, number>; missingPacks: Set<string> }> {
  const { problems } = run;
  const stored = new Map<string, number>();
  for await (const info of run.ctx.backend.list('data', run.options)) stored.set(info.name, info.size);
  const missingPacks = new Set<string>();
  for (const pack of packs.values()) {
    const size = stored.get(pack.id);
    if (size === undefined) {
      missingPacks.add(pack.id);
      problems.push({
        kind: 'missing-pack',
        object: pack.id,
        message: `pack ${pack.id} is named by the index but missing (${pack.blobs.length} blobs)`,
      });
    } else if (size !== pack.size) {
      problems.push({
        kind: 'damaged-pack',
        object: pack.id,
        message: `pack ${pack.id} has ${size} bytes; the index says ${pack.size}`,
      });
    }
  }
  for (const [name, size] of stored) {
    if (!packs.has(name)) {
      problems.push({
        kind: 'unreferenced-pack',
        object: name,
        message: `pack ${name} (${size} bytes) is named by no index: left by an interrupted backup; prune removes it after the grace period`,
      });
    }
  }
  return { stored, missingPacks };
}

/** Every manifest's set and root tree; a manifest that does not open is a problem. */
async function loadSets(run: CheckRun): Promise<SetRoot[]> {
  const sets: SetRoot[] = [];
  for await (const info of run.ctx.backend.list('manifests', run.options)) {
    try {
      const manifest = await run.ctx.repo.loadManifest(info.name, run.options);
      sets.push({ setId: manifest.setId, tree: manifest.tree });
    } catch (error) {
      if (error instanceof QuiesceError && error.code === 'bad-usage') continue; // removed since the listing
      run.problems.push({ kind: 'damaged-manifest', object: info.name, message: messageOf(error) });
    }
  }
  return sets;
}

/** Walks every tree from the sets' roots; answers the trees seen and the data blobs they name. */
async function walkTrees(
  run: CheckRun,
  index: IndexedPacks['index'],
  sets: readonly SetRoot[],
  loadTree: (id: string) => Promise<Tree>,
  shapes: SetShapes,
): Promise<{ trees: Set<string>; dataRefs: Set<string> }> {
  const dataRefs = new Set<string>();
  const trees = await visitTrees(
    sets.map((s) => s.tree),
    loadTree,
    (id, tree) => {
      shapes.add(id, tree);
      for (const node of tree.nodes) if (node.type === 'file') for (const ref of node.content) dataRefs.add(ref.id);
    },
    (id, error) => {
      if (!index.has(id))
        run.problems.push({ kind: 'missing-blob', object: id, message: `tree ${id} is not in the repository` });
      else run.problems.push({ kind: 'damaged-tree', object: id, message: messageOf(error) });
    },
  );
  return { trees, dataRefs };
}

/** Data blobs that cannot be read back: missing from the index, or in a missing pack. */
function lostBlobs(
  index: IndexedPacks['index'],
  dataRefs: ReadonlySet<string>,
  missingPacks: ReadonlySet<string>,
): Map<string, CheckProblem> {
  const lost = new Map<string, CheckProblem>();
  for (const id of dataRefs) {
    const location = index.get(id);
    if (location === undefined) {
      lost.set(id, { kind: 'missing-blob', object: id, message: `data blob ${id} is not in the repository` });
    } else if (missingPacks.has(location.pack)) {
      lost.set(id, {
        kind: 'missing-blob',
        object: id,
        message: `data blob ${id} is in pack ${location.pack}, which is missing`,
      });
    }
  }
  return lost;
}

/** `readData`: reads every stored pack whole; a damaged data blob a file uses joins `lost`. */
async function readAllData(
  run: CheckRun,
  toRead: readonly IndexedPack[],
  dataRefs: ReadonlySet<string>,
  lost: Map<string, CheckProblem>,
): Promise<void> {
  const { options } = run;
  let done = 0;
  options.onProgress?.(0, toRead.length);
  for (const pack of toRead) {
    options.signal?.throwIfAborted();
    await readPackData(run, pack, dataRefs, lost);
    done += 1;
    options.onProgress?.(done, toRead.length);
  }
}

async function readPackData(
  run: CheckRun,
  pack: IndexedPack,
  dataRefs: ReadonlySet<string>,
  lost: Map<string, CheckProblem>,
): Promise<void> {
  const { keys } = run.ctx;
  const bytes = await run.ctx.backend.load('data', pack.id, run.options);
  run.bytesRead += bytes.length;
  if (sha256Hex(bytes) !== pack.id) {
    run.problems.push({
      kind: 'damaged-pack',
      object: pack.id,
      message: `pack ${pack.id} does not hash to its name: its content changed`,
    });
  }
  try {
    readPackHeaderFromBytes(keys.encryption, bytes, pack.id);
  } catch (error) {
    run.problems.push({ kind: 'damaged-pack', object: pack.id, message: messageOf(error) });
  }
  for (const blob of pack.blobs) {
    try {
      if (blob.offset + blob.length > bytes.length)
        throw new QuiesceError('damaged', `blob ${blob.id} in pack ${pack.id} lies beyond the pack's end`);
      verifyBlob(keys, blob.id, bytes.subarray(blob.offset, blob.offset + blob.length), pack.id, blob.rawLength);
    } catch (error) {
      const problem: CheckProblem = { kind: 'damaged-blob', object: blob.id, message: messageOf(error) };
      if (blob.type === 'data' && dataRefs.has(blob.id)) lost.set(blob.id, problem);
      else run.problems.push(problem);
    }
  }
}
