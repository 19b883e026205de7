import { open } from 'node:fs/promises';
import { QuiesceError, rawPath, type CallOptions } from '../model/index.ts';
import type { Chunker, ContentRef, ArchiverRepository } from '../repository/index.ts';
import { awaitedLater, type InFlightLimit } from '../util/index.ts';

/** What a file's saves add to the archive's totals. */
export interface SaveCounters {
  bytesRead: number;
  bytesAdded: number;
}

/** The content refs of a file being stored (ids filled in as the saves finish) and when they all have. */
export interface PendingContent {
  refs: ContentRef[];
  done: Promise<void>;
  /** The bytes read: `length`, or fewer when a file read in place (`live`) shrank under the read. */
  length: number;
}

// A read buffer and a chunker per file being read, shared by the whole archive (the chunker
// copies what it keeps, and its carry buffer lives as long as it does).
interface Reader {
  buffer: Buffer;
  chunker: Chunker;
}

/** One file's saves: where its refs go and what it waits for. */
interface FileSaves {
  refs: ContentRef[];
  saves: Promise<void>[];
  options: CallOptions & { likelyNew: boolean };
}

/**
 * Reads files (or spans of them), chunks them and starts storing the chunks, with `readers`
 * files read at once and the saves in flight across all files bounded by `inFlight`.
 */
export class FileSaver {
  readonly #readers: Reader[];
  readonly #readerWaiters: ((reader: Reader) => void)[] = [];

  constructor(
    private readonly repository: ArchiverRepository,
    private readonly options: CallOptions,
    private readonly counters: SaveCounters,
    private readonly inFlight: InFlightLimit,
    readers: number,
  ) {
    this.#readers = Array.from({ length: readers }, () => ({
      buffer: Buffer.allocUnsafe(1 << 20),
      // Chunks go into the repository's recycled buffers, which move to the encoding workers whole.
      chunker: repository.createChunker(),
    }));
  }

  /**
   * Reads [offset, offset+length) of a file, chunks it with a fresh chunker and starts storing the
   * chunks (`likelyNew`: see `SaveBlobOptions`). Returns the content refs (their ids are filled
   * in as the saves finish) and `done`, which settles when they all have: the directory holding
   * the file awaits it before its tree is saved, so reading the next files overlaps with
   * compressing and sealing this one.
   */
  async readAndStore(
    path: string,
    offset: number,
    length: number,
    original: string,
    likelyNew = false,
    live = false,
  ): Promise<PendingContent> {
    const handle = await open(rawPath(path), 'r').catch((error: unknown) => {
      throw QuiesceError.from(error, 'nonretryable', { component: original });
    });
    const file: FileSaves = { refs: [], saves: [], options: { ...this.options, likelyNew } };
    const reader = await this.#takeReader();
    const { buffer, chunker } = reader;
    let position = offset;
    try {
      const end = offset + length;
      while (position < end) {
        this.options.signal?.throwIfAborted();
        const want = Math.min(buffer.length, end - position);
        const { bytesRead } = await handle.read(buffer, 0, want, position);
        if (bytesRead === 0 && live) break; // what no snapshot holds may shrink: stored as read
        if (bytesRead === 0)
          throw new QuiesceError('inconsistent-snapshot', `${original} shrank while it was read from the snapshot`, {
            component: original,
          });
        position += bytesRead;
        this.counters.bytesRead += bytesRead;
        // The chunker copies what it keeps and returns fresh chunks: the read buffer is reused as it is.
        for (const chunk of chunker.update(buffer.subarray(0, bytesRead))) await this.#store(file, chunk);
      }
      for (const chunk of chunker.finish()) await this.#store(file, chunk);
    } catch (error) {
      await Promise.allSettled(file.saves);
      throw error;
    } finally {
      this.#giveReader(reader);
      await handle.close();
    }
    const done = awaitedLater(Promise.all(file.saves).then(() => undefined));
    return { refs: file.refs, done, length: position - offset };
  }

  async #store(file: FileSaves, chunk: Uint8Array): Promise<void> {
    await this.inFlight.room();
    const ref: ContentRef = { id: '', length: chunk.length };
    file.refs.push(ref);
    const saving = this.repository.saveBlob('data', chunk, file.options).then((saved) => {
      ref.id = saved.id;
      this.counters.bytesAdded += saved.storedBytes;
    });
    this.inFlight.track(saving);
    file.saves.push(saving);
  }

  async #takeReader(): Promise<Reader> {
    return this.#readers.pop() ?? new Promise<Reader>((resolve) => this.#readerWaiters.push(resolve));
  }

  #giveReader(reader: Reader): void {
    reader.chunker.reset();
    const waiter = this.#readerWaiters.shift();
    if (waiter) waiter(reader);
    else this.#readers.push(reader);
  }
}
