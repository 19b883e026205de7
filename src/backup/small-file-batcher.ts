import { QuiesceError, rawPath, type CallOptions } from '../model/index.ts';
import type { ContentRef, ArchiverRepository } from '../repository/index.ts';
import { awaitedLater, type InFlightLimit } from '../util/index.ts';
import type { SaveCounters } from './file-saver.ts';

/** A batch of small files goes to a worker at this many files or bytes, or when its directory is walked. */
const SMALL_BATCH_FILES = 64;
const SMALL_BATCH_BYTES = 1024 * 1024;
const SMALL_BATCH_WAIT_MS = 20;

interface SmallFile {
  path: string;
  size: number;
  original: string;
  ref: ContentRef;
  settle: (error?: Error) => void;
}

/**
 * Small files (one chunk each) go to the encoding workers whole, many to a batch: they read,
 * name and seal them there, and no file I/O for them costs the main thread a round trip.
 */
export class SmallFileBatcher {
  /** Files no larger than this (the chunker's minimum size) are one chunk: they may be batched. */
  readonly maxSize: number;
  #batch: SmallFile[] = [];
  #batchBytes = 0;

  constructor(
    private readonly repository: ArchiverRepository,
    private readonly options: CallOptions,
    private readonly counters: SaveCounters,
    private readonly inFlight: InFlightLimit,
    private readonly onStored: (original: string) => void,
  ) {
    this.maxSize = repository.createChunker().minSize ?? 0;
  }

  /** Adds a file to the batch; `ref.id` is filled in when it is stored, and the promise settles then. */
  store(path: string, size: number, original: string, ref: ContentRef): Promise<void> {
    const stored = awaitedLater(
      new Promise<void>((resolve, reject) => {
        this.#batch.push({
          path,
          size,
          original,
          ref,
          settle: (error) => (error === undefined ? resolve() : reject(error)),
        });
      }),
    );
    this.#batchBytes += size;
    if (this.#batch.length >= SMALL_BATCH_FILES || this.#batchBytes >= SMALL_BATCH_BYTES) void this.send();
    // Whoever waits for these files sends the batch first; this timer only makes sure it goes.
    else if (this.#batch.length === 1) setTimeout(() => void this.send(), SMALL_BATCH_WAIT_MS);
    return stored;
  }

  /** Sends the batch so far; a directory calls it before it waits for its files. */
  async send(): Promise<void> {
    if (this.#batch.length === 0) return;
    const files = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    await this.inFlight.room();
    const sending = this.#save(files);
    this.inFlight.track(sending);
    await sending;
  }

  async #save(files: SmallFile[]): Promise<void> {
    try {
      const results = await this.repository.saveSmallFiles(
        files.map(({ path, size }) => ({ path: rawPath(path), size })),
        this.options,
      );
      files.forEach((file, i) => {
        const saved = results[i]!;
        if ('error' in saved) {
          file.settle(smallFileError(file.original, saved.code, saved.error));
          return;
        }
        file.ref.id = saved.id;
        this.counters.bytesRead += file.size;
        this.counters.bytesAdded += saved.storedBytes;
        file.settle();
      });
      this.onStored(files.at(-1)!.original);
    } catch (error) {
      for (const file of files) file.settle(error instanceof Error ? error : new Error(String(error)));
    }
  }
}

function smallFileError(original: string, code: string | null, message: string): QuiesceError {
  return code === 'CHANGED'
    ? new QuiesceError('inconsistent-snapshot', `${original} changed while it was read from the snapshot: ${message}`, {
        component: original,
      })
    : new QuiesceError('nonretryable', `cannot read ${original} from the snapshot: ${message}`, {
        component: original,
      });
}
