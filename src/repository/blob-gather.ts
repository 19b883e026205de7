import { QuiesceError, type CallOptions } from '../model/index.ts';
import { awaitedLater } from '../util/index.ts';
import type { Backend } from './backend/backend.ts';
import type { BlobIndex } from './blob-index.ts';
import { loadPack, verifyBlob } from './blob-reader.ts';
import type { BlobSaver } from './blob-saver.ts';
import type { RepositoryKeys } from './crypto/keys.ts';

/** Blobs of one pack are read as one range across gaps up to GATHER_GAP, in ranges up to GATHER_MAX. */
const GATHER_GAP = 64 * 1024;
const GATHER_MAX = 8 * 1024 * 1024;

/** A stored blob where the index puts it. */
interface PackedBlob {
  id: string;
  offset: number;
  length: number;
  rawLength: number;
}

/** What gathering reads through: the repository's index, its saver and its blob reader. */
export interface GatherSource {
  readonly backend: Backend;
  readonly keys: RepositoryKeys;
  readonly index: BlobIndex;
  readonly saver: BlobSaver;
  loadBlob(id: string, options: CallOptions): Promise<Buffer>;
}

/**
 * Many blobs at once, each verified on its own (a damaged one fails alone): blobs lying close
 * together in a pack are read with one ranged load. Every promise is marked handled: the caller
 * awaits them later, in its own order.
 */
export function gatherBlobs(
  source: GatherSource,
  ids: readonly string[],
  options: CallOptions,
): Map<string, Promise<Buffer>> {
  const loads = new Map<string, Promise<Buffer>>();
  // Stored blobs by pack, in pack order; anything else is loaded on its own.
  const byPack = new Map<string, PackedBlob[]>();
  for (const id of new Set(ids)) {
    const location = source.saver.has(id) ? undefined : source.index.get(id);
    if (location === undefined) {
      loads.set(id, awaitedLater(source.loadBlob(id, options)));
      continue;
    }
    const blobs = byPack.get(location.pack) ?? [];
    blobs.push({ id, offset: location.offset, length: location.length, rawLength: location.rawLength });
    byPack.set(location.pack, blobs);
  }
  for (const [pack, blobs] of byPack) {
    blobs.sort((a, b) => a.offset - b.offset);
    for (const run of gatherRuns(blobs)) loadRun(source, pack, run, loads, options);
  }
  return loads;
}

/**
 * Cuts blobs sorted by offset into runs read as one range each: gaps of other blobs up to
 * GATHER_GAP are read and dropped, and no run spans more than GATHER_MAX.
 */
export function gatherRuns<T extends { offset: number; length: number }>(blobs: readonly T[]): T[][] {
  const runs: T[][] = [];
  for (let first = 0; first < blobs.length;) {
    let last = first;
    while (
      last + 1 < blobs.length &&
      blobs[last + 1]!.offset - (blobs[last]!.offset + blobs[last]!.length) <= GATHER_GAP &&
      blobs[last + 1]!.offset + blobs[last + 1]!.length - blobs[first]!.offset <= GATHER_MAX
    ) {
      last++;
    }
    runs.push(blobs.slice(first, last + 1));
    first = last + 1;
  }
  return runs;
}

/**
 * Reads one run with one ranged load and answers each of its blobs, verified alone, into `loads`.
 * When that load fails as `damaged` (a truncated pack), each blob is read on its own: those still
 * whole load, only the others fail.
 */
function loadRun(
  source: GatherSource,
  pack: string,
  run: readonly PackedBlob[],
  loads: Map<string, Promise<Buffer>>,
  options: CallOptions,
): void {
  const start = run[0]!.offset;
  const end = run.at(-1)!.offset + run.at(-1)!.length;
  const bytes = loadPack(source.backend, pack, run[0]!.id, { offset: start, length: end - start }, options);
  const alone = (error: unknown, blob: PackedBlob) => {
    if (run.length === 1 || !(error instanceof QuiesceError) || error.code !== 'damaged') throw error;
    return source.loadBlob(blob.id, options);
  };
  for (const blob of run) {
    const opened = bytes.then(
      (range) =>
        verifyBlob(
          source.keys,
          blob.id,
          range.subarray(blob.offset - start, blob.offset - start + blob.length),
          pack,
          blob.rawLength,
        ),
      (error: unknown) => alone(error, blob),
    );
    loads.set(blob.id, awaitedLater(opened));
  }
}
