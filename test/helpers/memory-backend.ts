// An in-memory Backend for repository tests: the Backend contract without a disk, plus hooks to
// damage objects and count calls, so tests can play a crashed or bit-rotted store.
import {
  BackendError,
  type Backend,
  type LoadOptions,
  type ObjectInfo,
  type ObjectType,
} from '../../src/repository/backend/backend.ts';
import type { CallOptions } from '../../src/model/index.ts';

export class MemoryBackend implements Backend {
  readonly location: string;
  readonly objects = new Map<string, Buffer>();
  /** How many bytes `load` has returned, for tests that prove a ranged read. */
  bytesLoaded = 0;

  constructor(location = 'memory:test') {
    this.location = location;
  }

  private key(type: ObjectType, name: string): string {
    return `${type}/${name}`;
  }

  async save(type: ObjectType, name: string, data: Uint8Array, options: CallOptions = {}): Promise<void> {
    options.signal?.throwIfAborted();
    this.objects.set(this.key(type, name), Buffer.from(data));
  }

  async load(type: ObjectType, name: string, options: LoadOptions = {}): Promise<Buffer> {
    options.signal?.throwIfAborted();
    const data = this.objects.get(this.key(type, name));
    if (data === undefined) throw new BackendError(`${type}/${name} not found`, { notFound: true });
    if (options.offset === undefined && options.length === undefined) {
      this.bytesLoaded += data.length;
      return Buffer.from(data);
    }
    const offset = options.offset ?? 0;
    const length = options.length ?? data.length - offset;
    if (offset < 0 || length < 0 || offset + length > data.length) {
      throw new BackendError(`${type}/${name}: short read (${offset}+${length} of ${data.length})`);
    }
    this.bytesLoaded += length;
    return Buffer.from(data.subarray(offset, offset + length));
  }

  async stat(type: ObjectType, name: string, options: CallOptions = {}): Promise<ObjectInfo> {
    options.signal?.throwIfAborted();
    const data = this.objects.get(this.key(type, name));
    if (data === undefined) throw new BackendError(`${type}/${name} not found`, { notFound: true });
    return { name, size: data.length };
  }

  async *list(type: ObjectType, options: CallOptions = {}): AsyncIterable<ObjectInfo> {
    options.signal?.throwIfAborted();
    const prefix = `${type}/`;
    for (const [key, data] of [...this.objects]) {
      if (key.startsWith(prefix)) yield { name: key.slice(prefix.length), size: data.length };
    }
  }

  async remove(type: ObjectType, name: string, options: CallOptions = {}): Promise<void> {
    options.signal?.throwIfAborted();
    this.objects.delete(this.key(type, name));
  }

  async exists(options: CallOptions = {}): Promise<boolean> {
    options.signal?.throwIfAborted();
    return this.objects.has('config/config');
  }

  async close(): Promise<void> {}

  /** The names of every object of a type. */
  names(type: ObjectType): string[] {
    const prefix = `${type}/`;
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }

  get(type: ObjectType, name: string): Buffer {
    const data = this.objects.get(this.key(type, name));
    if (data === undefined) throw new Error(`no ${type}/${name}`);
    return data;
  }

  put(type: ObjectType, name: string, data: Uint8Array): void {
    this.objects.set(this.key(type, name), Buffer.from(data));
  }
}
