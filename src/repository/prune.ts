import { QuiesceError, type CallOptions } from '../model/index.ts';
import { indexPacks } from './blob-index.ts';
import { readBlob, verifyBlob } from './blob-reader.ts';
import { encodeIndex, loadAllIndexes, type IndexedPack } from './index-file.ts';
import { buildPack, loadPackHeader, type PackedBlob } from './pack-file.ts';
import type { RepositoryInternals } from './repository-internals.ts';
import { storageError } from './storage-error.ts';
import { parseTree } from './tree-blob.ts';
import { visitTrees } from './tree-walk.ts';
import type { BlobType } from './repository-api.ts';

export interface PruneReport {
  packsRemoved: number;
  packsRepacked: number;
  bytesFreed: number;
  /** Unreferenced packs younger than the grace period, left for a later prune. */
  packsKeptForGrace: number;
  /** Temporary files of writes a crash cut off, older than the grace period, removed (their bytes are in `bytesFreed`). */
  temporaryFilesRemoved: number;
}

export interface PruneOptions extends CallOptions {
  /** Packs that no index names are removed only once they are older than this (default 24 h). */
  graceMs?: number;
  /** Report what would go, change nothing. */
  dryRun?: boolean;
}

export const DEFAULT_GRACE_MS = 24 * 60 * 60 * 1000;
/** A pack is rewritten when more than this share of its blob bytes is unused. */
const REPACK_THRESHOLD = 0.2;
const PACKS_PER_INDEX = 1000;

function damaged(message: string, cause?: unknown): QuiesceError {
  return new QuiesceError(
    'damaged',
    `prune stopped, nothing was removed: ${message}. Run quiesce check`,
    cause === undefined ? {} : { cause },
  );
}

/**
 * Removes what no manifest needs, under an exclusive lock.
 *
 * Marks every blob reachable from the manifests (any unreadable manifest, tree or index stops
 * prune before it changes anything). Then: packs with no used blob are marked unused in the index
 * and go once the mark is older than `graceMs` (so data forgotten a moment ago survives a prune
 * run right after, and an operator who forgot the wrong set has the grace period to notice);
 * packs with more than 20%
 * unused bytes are rewritten with only their used blobs; packs that no index names (left by a
 * crashed backup) go once their header's creation time is older than `graceMs` (a pack whose
 * header cannot be read can never be indexed and goes at once).
 *
 * Write order, so that a crash at any moment leaves a valid repository:
 * new packs, then the new index (naming every kept and new pack), then removal of the old index
 * objects, then removal of the old packs. A crash before the last step leaves packs no index
 * names, which the next prune removes.
 */
export async function pruneRepository(ctx: RepositoryInternals, options: PruneOptions = {}): Promise<PruneReport> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const call: CallOptions = options.signal === undefined ? {} : { signal: options.signal };
  await ctx.repo.flush(call);
  const lock = await ctx.repo.lock('exclusive', call);
  try {
    const { files, damaged: badIndexes } = await loadAllIndexes(ctx.backend, ctx.keys.encryption, call);
    if (badIndexes.length > 0)
      throw damaged(
        `index ${badIndexes[0]!.name} cannot be read (${badIndexes[0]!.message}); quiesce repair index rebuilds the index from the packs`,
      );
    const { packs, index } = indexPacks(files);
    const stored = new Map<string, number>();
    for await (const info of ctx.backend.list('data', call)) stored.set(info.name, info.size);
    const used = await markUsed(ctx, index, stored, call);
    const now = Date.now();
    const plan = sweep(packs, index, stored, used, graceMs, now);
    const leftovers = await findLeftovers(ctx, packs, stored, graceMs, now, call);
    plan.packsKeptForGrace += leftovers.keptForGrace;
    const report: PruneReport = {
      packsRemoved: plan.remove.length + leftovers.names.length,
      packsRepacked: plan.repack.length,
      bytesFreed: 0,
      packsKeptForGrace: plan.packsKeptForGrace,
      temporaryFilesRemoved: 0,
    };
    const freed =
      plan.remove.reduce((sum, p) => sum + (stored.get(p.id) ?? 0), 0) +
      leftovers.names.reduce((sum, n) => sum + (stored.get(n) ?? 0), 0) +
      plan.repack.reduce((sum, r) => sum + (stored.get(r.pack.id) ?? 0), 0);
    if (options.dryRun === true) {
      // The new packs' size is not known without writing them: estimate by the live blob bytes.
      report.bytesFreed = freed - plan.repack.reduce((sum, r) => sum + r.blobs.reduce((s, b) => s + b.length, 0), 0);
      return report;
    }
    await removeTemporaryFiles(ctx, graceMs, report, call);
    if (!changesAnything(plan, packs, leftovers.names)) return report;
    await rewrite(ctx, plan, files, leftovers.names, freed, report, call);
    return report;
  } finally {
    await lock.release();
    // Without the signal: the index must follow what prune did even if it was cancelled.
    await ctx.reloadAfterPrune().catch(() => undefined);
  }
}

type IndexedPacks = ReturnType<typeof indexPacks>;

/** What the sweep decided for each indexed pack. */
interface PrunePlan {
  keep: IndexedPack[];
  remove: IndexedPack[];
  repack: { pack: IndexedPack; blobs: PackedBlob[] }[];
  /** Packs whose every blob became unused: marked now, deleted once the mark is older than the grace period. */
  marked: IndexedPack[];
  packsKeptForGrace: number;
}

/**
 * Mark: every blob reachable from the manifests. Any unreadable manifest or tree, or a needed
 * blob not indexed or in a missing pack, stops prune before it changes anything.
 */
async function markUsed(
  ctx: RepositoryInternals,
  index: IndexedPacks['index'],
  stored: ReadonlyMap<string, number>,
  call: CallOptions,
): Promise<Set<string>> {
  const { backend, keys } = ctx;
  const used = new Set<string>();
  const roots: string[] = [];
  for (const name of await ctx.repo.listManifests(call)) {
    try {
      roots.push((await ctx.repo.loadManifest(name, call)).tree);
    } catch (error) {
      if (error instanceof QuiesceError && error.code === 'bad-usage') continue; // removed meanwhile
      throw damaged(`manifest ${name} cannot be read`, error);
    }
  }
  await visitTrees(
    roots,
    async (id) => {
      const location = index.get(id);
      if (location === undefined) throw damaged(`tree ${id} is not in the index`);
      return parseTree(id, await readBlob(backend, keys, id, location, call));
    },
    (id, tree) => {
      used.add(id);
      for (const node of tree.nodes) if (node.type === 'file') for (const ref of node.content) used.add(ref.id);
    },
    (id, error) => {
      throw error instanceof QuiesceError && error.message.startsWith('prune stopped')
        ? error
        : damaged(`tree ${id} cannot be read`, error);
    },
  );
  for (const id of used) {
    const location = index.get(id);
    if (location === undefined) throw damaged(`blob ${id}, which a manifest needs, is not in the index`);
    if (!stored.has(location.pack))
      throw damaged(`pack ${location.pack}, which holds blob ${id} that a manifest needs, is missing`);
  }
  return used;
}

/** Sweep: decide per pack. A blob counts as used in the one pack the index resolves it to. */
function sweep(
  packs: IndexedPacks['packs'],
  index: IndexedPacks['index'],
  stored: ReadonlyMap<string, number>,
  used: ReadonlySet<string>,
  graceMs: number,
  now: number,
): PrunePlan {
  const plan: PrunePlan = { keep: [], remove: [], repack: [], marked: [], packsKeptForGrace: 0 };
  for (const pack of packs.values()) {
    if (!stored.has(pack.id)) continue; // named but gone, and nothing used lives there (checked above): drop it from the index
    const live = pack.blobs.filter((b) => used.has(b.id) && index.get(b.id)?.pack === pack.id);
    if (live.length === 0) {
      const since = pack.unusedSince === undefined ? now : Date.parse(pack.unusedSince);
      if (now - since >= graceMs) plan.remove.push(pack);
      else {
        plan.marked.push({ ...pack, unusedSince: pack.unusedSince ?? new Date(now).toISOString() });
        plan.packsKeptForGrace += 1;
      }
      continue;
    }
    if (pack.unusedSince !== undefined) {
      // Used again since a prune marked it: no longer a candidate.
      const { unusedSince: _cleared, ...revived } = pack;
      plan.keep.push(revived);
      continue;
    }
    const total = pack.blobs.reduce((sum, b) => sum + b.length, 0);
    const unused = total - live.reduce((sum, b) => sum + b.length, 0);
    if (unused / total > REPACK_THRESHOLD) plan.repack.push({ pack, blobs: live });
    else plan.keep.push(pack);
  }
  return plan;
}

/**
 * Stored packs no index names (left by a crashed backup): those whose header's creation time is
 * older than the grace period go, and so does one whose header cannot be read.
 */
async function findLeftovers(
  ctx: RepositoryInternals,
  packs: IndexedPacks['packs'],
  stored: ReadonlyMap<string, number>,
  graceMs: number,
  now: number,
  call: CallOptions,
): Promise<{ names: string[]; keptForGrace: number }> {
  const names: string[] = [];
  let keptForGrace = 0;
  for (const [name, size] of stored) {
    if (packs.has(name)) continue;
    let created: number;
    try {
      created = Date.parse((await loadPackHeader(ctx.backend, ctx.keys.encryption, name, size, call)).created);
    } catch (error) {
      if (!(error instanceof QuiesceError && error.code === 'damaged')) throw error;
      created = Number.NEGATIVE_INFINITY; // unreadable: no index can ever name it
    }
    if (!(now - created < graceMs)) names.push(name);
    else keptForGrace += 1;
  }
  return { names, keptForGrace };
}

/**
 * Writes a crash cut off leave temporary files no listing shows; none is live under the
 * exclusive lock, and the grace period covers a process whose lock went stale.
 */
async function removeTemporaryFiles(
  ctx: RepositoryInternals,
  graceMs: number,
  report: PruneReport,
  call: CallOptions,
): Promise<void> {
  if (ctx.backend.removeTemporary === undefined) return;
  const temporary = await ctx.backend.removeTemporary(graceMs, call);
  report.temporaryFilesRemoved = temporary.files;
  report.bytesFreed += temporary.bytes;
}

/** Does the plan change the index or any pack (a new mark or a revived pack changes the index)? */
function changesAnything(plan: PrunePlan, packs: IndexedPacks['packs'], leftovers: readonly string[]): boolean {
  const newlyMarked = plan.marked.filter((p) => packs.get(p.id)?.unusedSince === undefined).length;
  const revived = plan.keep.filter((p) => packs.get(p.id)?.unusedSince !== undefined).length;
  return plan.remove.length > 0 || plan.repack.length > 0 || leftovers.length > 0 || newlyMarked > 0 || revived > 0;
}

/** Carries out the plan in the write order that keeps the repository valid at every moment. */
async function rewrite(
  ctx: RepositoryInternals,
  plan: PrunePlan,
  oldIndexes: readonly { name: string }[],
  leftovers: readonly string[],
  freed: number,
  report: PruneReport,
  call: CallOptions,
): Promise<void> {
  const { backend } = ctx;
  // 1. New packs with the live blobs of the packs being rewritten.
  const written = await repackLive(ctx, plan.repack, call);
  report.bytesFreed += freed - written.reduce((sum, p) => sum + p.size, 0);
  // 2. The new index: every kept pack and every new one.
  await writeIndexes(ctx, [...plan.keep, ...plan.marked, ...written], call);
  // 3. The old index objects. 4. The old packs.
  for (const { name } of oldIndexes) await backend.remove('index', name, call);
  for (const pack of [...plan.remove, ...plan.repack.map((r) => r.pack)]) await backend.remove('data', pack.id, call);
  for (const name of leftovers) await backend.remove('data', name, call);
}

/** Copies the live blobs of the packs being rewritten into new packs of about `packSize`. */
async function repackLive(
  ctx: RepositoryInternals,
  repack: PrunePlan['repack'],
  call: CallOptions,
): Promise<IndexedPack[]> {
  const { backend, keys } = ctx;
  const written: IndexedPack[] = [];
  let batch: { id: string; type: BlobType; rawLength: number; sealed: Buffer }[] = [];
  let batchBytes = 0;
  const writeBatch = async (): Promise<void> => {
    if (batch.length === 0) return;
    const built = buildPack(keys.encryption, batch);
    batch = [];
    batchBytes = 0;
    try {
      await backend.save('data', built.name, built.bytes, call);
    } catch (error) {
      throw storageError(error, backend.location);
    }
    written.push({ id: built.name, size: built.bytes.length, blobs: built.header.blobs });
  };
  for (const { pack, blobs } of repack) {
    const bytes = await backend.load('data', pack.id, call);
    for (const blob of blobs) {
      const sealed = Buffer.from(bytes.subarray(blob.offset, blob.offset + blob.length));
      try {
        verifyBlob(keys, blob.id, sealed, pack.id, blob.rawLength);
      } catch (error) {
        throw damaged(`blob ${blob.id} in pack ${pack.id}, which a manifest needs, is damaged`, error);
      }
      batch.push({ id: blob.id, type: blob.type, rawLength: blob.rawLength, sealed });
      batchBytes += sealed.length;
      if (batchBytes >= ctx.packSize) await writeBatch();
    }
  }
  await writeBatch();
  return written;
}

/** Writes the index objects naming `all` (1,000 packs to an object). */
export async function writeIndexes(
  ctx: RepositoryInternals,
  all: readonly IndexedPack[],
  call: CallOptions,
): Promise<void> {
  for (let at = 0; at < all.length; at += PACKS_PER_INDEX) {
    const { name, bytes } = encodeIndex(ctx.keys.encryption, all.slice(at, at + PACKS_PER_INDEX));
    try {
      await ctx.backend.save('index', name, bytes, call);
    } catch (error) {
      throw storageError(error, ctx.backend.location);
    }
  }
}
