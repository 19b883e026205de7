import { QuiesceError, type CallOptions } from '../model/index.ts';
import { messageOf } from '../util/index.ts';
import { indexPacks } from './blob-index.ts';
import { verifyBlob } from './blob-reader.ts';
import { sha256Hex } from './crypto/keys.ts';
import { loadAllIndexes, type IndexedPack } from './index-file.ts';
import { buildPack, loadPackHeader, type PackedBlob } from './pack-file.ts';
import { writeIndexes } from './prune.ts';
import type { RepositoryInternals } from './repository-internals.ts';
import { storageError } from './storage-error.ts';
import { filesUsing, visitTrees } from './tree-walk.ts';

export interface RepairIndexReport {
  /** Index objects read, and those among them that did not open (all are replaced). */
  indexesRead: number;
  damagedIndexes: { name: string; message: string }[];
  indexesWritten: number;
  /** Packs the new index names. */
  packs: number;
  /** Stored packs no sound index named, indexed again from their own headers. */
  packsFromHeaders: string[];
  /** Packs an index named that are not stored: dropped from the index. */
  packsMissing: string[];
  /** Stored packs whose header cannot be read: left out (quiesce repair packs cannot save them either; prune removes them). */
  packsUnreadable: { pack: string; message: string }[];
  /** False when the index was sound and nothing was written. */
  changed: boolean;
}

export interface DroppedBlob {
  id: string;
  type: 'data' | 'tree';
  pack: string;
  message: string;
  /** For a data blob, the files that used it (`<setId>:/path`); for a tree, the sets that reach it. */
  usedBy: string[];
}

export interface RepairPacksReport {
  packsRead: number;
  bytesRead: number;
  /** Packs that were damaged (or missing): their sound blobs were copied to new packs, and they were removed. */
  damagedPacks: { pack: string; message: string }[];
  blobsSalvaged: number;
  packsWritten: number;
  /** Blobs that could not be read, now out of the index: the next backup stores them again. */
  dropped: DroppedBlob[];
}

/**
 * Rebuilds the index from the packs (restic's `repair index`): under an exclusive lock, every
 * stored pack a sound index object names at its size keeps its entry; any other stored pack is
 * indexed from its own header (each pack lists its blobs); packs an index names but that are
 * gone are dropped. Crash-safe order: the new index objects are written, then every old one is
 * removed (a crash between leaves both, and they agree). Nothing is written when the index is sound.
 */
export async function repairIndex(ctx: RepositoryInternals, options: CallOptions = {}): Promise<RepairIndexReport> {
  const call: CallOptions = options.signal === undefined ? {} : { signal: options.signal };
  await ctx.repo.flush(call);
  const lock = await ctx.repo.lock('exclusive', call);
  try {
    const { files, damaged } = await loadAllIndexes(ctx.backend, ctx.keys.encryption, call);
    const { packs } = indexPacks(files);
    const stored = new Map<string, number>();
    for await (const info of ctx.backend.list('data', call)) stored.set(info.name, info.size);
    const report: RepairIndexReport = {
      indexesRead: files.length + damaged.length,
      damagedIndexes: damaged,
      indexesWritten: 0,
      packs: 0,
      packsFromHeaders: [],
      packsMissing: [...packs.keys()].filter((id) => !stored.has(id)).sort(),
      packsUnreadable: [],
      changed: false,
    };
    const kept: IndexedPack[] = [];
    for (const [name, size] of stored) {
      const known = packs.get(name);
      if (known !== undefined && known.size === size) {
        kept.push(known);
        continue;
      }
      try {
        const header = await loadPackHeader(ctx.backend, ctx.keys.encryption, name, size, call);
        kept.push({ id: name, size, blobs: header.blobs });
        report.packsFromHeaders.push(name);
      } catch (error) {
        if (!(error instanceof QuiesceError && error.code === 'damaged')) throw error;
        report.packsUnreadable.push({ pack: name, message: messageOf(error) });
      }
    }
    report.packs = kept.length;
    const sameNames = kept.length === packs.size && kept.every((pack) => packs.get(pack.id) === pack);
    if (damaged.length === 0 && sameNames) return report;
    report.changed = true;
    await writeIndexes(ctx, kept, call);
    report.indexesWritten = Math.ceil(kept.length / 1000);
    for (const { name } of [...files, ...damaged]) await ctx.backend.remove('index', name, call);
    return report;
  } finally {
    await lock.release();
    await ctx.reloadAfterPrune().catch(() => undefined);
  }
}

/** A pack read back whole: its sound blobs (sealed, to copy as they are), and the ones that failed. */
interface ReadPack {
  pack: IndexedPack;
  problem: string | null;
  sound: { blob: PackedBlob; sealed: Buffer }[];
  bad: { blob: PackedBlob; message: string }[];
}

/**
 * Reads every blob of every indexed pack (restic's `repair packs`): a pack that does not hash to
 * its name, is missing, or holds a blob that fails has its sound blobs copied to new packs and is
 * removed; the blobs that failed leave the index, so the next backup stores them again, and the
 * report names the files (or sets) that still reference them. Under an exclusive lock; order:
 * new packs, the new index, removal of the old index objects, removal of the damaged packs.
 */
export async function repairPacks(ctx: RepositoryInternals, options: CallOptions = {}): Promise<RepairPacksReport> {
  const call: CallOptions = options.signal === undefined ? {} : { signal: options.signal };
  await ctx.repo.flush(call);
  const lock = await ctx.repo.lock('exclusive', call);
  const report: RepairPacksReport = {
    packsRead: 0,
    bytesRead: 0,
    damagedPacks: [],
    blobsSalvaged: 0,
    packsWritten: 0,
    dropped: [],
  };
  let dropped: { blob: PackedBlob; pack: string; message: string }[] = [];
  try {
    const { files, damaged } = await loadAllIndexes(ctx.backend, ctx.keys.encryption, call);
    if (damaged.length > 0) {
      throw new QuiesceError(
        'damaged',
        `index ${damaged.map((d) => `index/${d.name}`).join(', ')} is damaged: run quiesce repair index first; nothing was changed`,
      );
    }
    const { packs } = indexPacks(files);
    const stored = new Map<string, number>();
    for await (const info of ctx.backend.list('data', call)) stored.set(info.name, info.size);
    const kept: IndexedPack[] = [];
    const broken: ReadPack[] = [];
    for (const pack of packs.values()) {
      const read = await readPack(ctx, pack, stored.has(pack.id), report, call);
      if (read.problem === null) kept.push(pack);
      else broken.push(read);
    }
    if (broken.length === 0) return report;
    const salvaged = await salvage(ctx, broken, call);
    report.packsWritten = salvaged.length;
    report.blobsSalvaged = broken.reduce((n, read) => n + read.sound.length, 0);
    report.damagedPacks = broken.map((read) => ({ pack: read.pack.id, message: read.problem! }));
    dropped = broken.flatMap((read) => read.bad.map(({ blob, message }) => ({ blob, pack: read.pack.id, message })));
    await writeIndexes(ctx, [...kept, ...salvaged], call);
    for (const { name } of files) await ctx.backend.remove('index', name, call);
    for (const read of broken) await ctx.backend.remove('data', read.pack.id, call);
  } finally {
    await lock.release();
    await ctx.reloadAfterPrune().catch(() => undefined);
  }
  report.dropped = await usersOf(ctx, dropped, call);
  return report;
}

async function readPack(
  ctx: RepositoryInternals,
  pack: IndexedPack,
  isStored: boolean,
  report: RepairPacksReport,
  call: CallOptions,
): Promise<ReadPack> {
  const read: ReadPack = { pack, problem: null, sound: [], bad: [] };
  if (!isStored) {
    read.problem = `pack ${pack.id} is missing`;
    read.bad = pack.blobs.map((blob) => ({ blob, message: read.problem! }));
    return read;
  }
  const bytes = await ctx.backend.load('data', pack.id, call);
  report.packsRead += 1;
  report.bytesRead += bytes.length;
  if (sha256Hex(bytes) !== pack.id) read.problem = `pack ${pack.id} does not hash to its name: its content changed`;
  for (const blob of pack.blobs) {
    try {
      if (blob.offset + blob.length > bytes.length)
        throw new QuiesceError('damaged', `blob ${blob.id} in pack ${pack.id} lies beyond the pack's end`);
      const sealed = Buffer.from(bytes.subarray(blob.offset, blob.offset + blob.length));
      verifyBlob(ctx.keys, blob.id, sealed, pack.id, blob.rawLength);
      read.sound.push({ blob, sealed });
    } catch (error) {
      if (!(error instanceof QuiesceError && error.code === 'damaged')) throw error;
      read.bad.push({ blob, message: messageOf(error) });
      read.problem ??= `pack ${pack.id} holds damaged blobs`;
    }
  }
  return read;
}

/** Copies the sound blobs of the damaged packs into new packs of about `packSize`. */
async function salvage(
  ctx: RepositoryInternals,
  broken: readonly ReadPack[],
  call: CallOptions,
): Promise<IndexedPack[]> {
  const written: IndexedPack[] = [];
  let batch: { id: string; type: 'data' | 'tree'; rawLength: number; sealed: Buffer }[] = [];
  let bytes = 0;
  const write = async (): Promise<void> => {
    if (batch.length === 0) return;
    const built = buildPack(ctx.keys.encryption, batch);
    batch = [];
    bytes = 0;
    try {
      await ctx.backend.save('data', built.name, built.bytes, call);
    } catch (error) {
      throw storageError(error, ctx.backend.location);
    }
    written.push({ id: built.name, size: built.bytes.length, blobs: built.header.blobs });
  };
  // Trees and data stay in packs of their own kind, as a backup writes them.
  for (const type of ['tree', 'data'] as const) {
    for (const read of broken) {
      for (const { blob, sealed } of read.sound) {
        if (blob.type !== type) continue;
        batch.push({ id: blob.id, type: blob.type, rawLength: blob.rawLength, sealed });
        bytes += sealed.length;
        if (bytes >= ctx.packSize) await write();
      }
    }
    await write();
  }
  return written;
}

/** Names what still references each dropped blob: the files for data, the sets for trees. */
async function usersOf(
  ctx: RepositoryInternals,
  dropped: readonly { blob: PackedBlob; pack: string; message: string }[],
  call: CallOptions,
): Promise<DroppedBlob[]> {
  if (dropped.length === 0) return [];
  const sets: { setId: string; tree: string }[] = [];
  for (const name of await ctx.repo.listManifests(call)) {
    try {
      const manifest = await ctx.repo.loadManifest(name, call);
      sets.push({ setId: manifest.setId, tree: manifest.tree });
    } catch {
      // a damaged manifest names nothing here: check reports it
    }
  }
  const load = (id: string) => ctx.repo.loadTree(id, call);
  const files = await filesUsing(sets, new Set(dropped.map((d) => d.blob.id)), load);
  const lostTrees = new Set(dropped.filter((d) => d.blob.type === 'tree').map((d) => d.blob.id));
  const setsReaching = new Map<string, string[]>();
  if (lostTrees.size > 0) {
    for (const set of sets) {
      await visitTrees(
        [set.tree],
        load,
        () => {},
        (id) => {
          if (lostTrees.has(id)) setsReaching.set(id, [...(setsReaching.get(id) ?? []), set.setId]);
        },
      );
    }
  }
  return dropped.map(({ blob, pack, message }) => ({
    id: blob.id,
    type: blob.type,
    pack,
    message,
    usedBy: blob.type === 'tree' ? (setsReaching.get(blob.id) ?? []) : (files.get(blob.id) ?? []),
  }));
}
