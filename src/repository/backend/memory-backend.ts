// An in-memory Backend for tests: the Backend contract without a disk (it passes the contract
// suite), plus hooks to damage objects and count calls, so tests can play a crashed or bit-rotted store.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { CallOptions } from '../../model/index.ts';
import { BackendError, type Backend, type LoadOptions, type ObjectInfo, type ObjectType } from './backend.ts';
import { checkObjectName, describeObject } from './object-path.ts';

export class MemoryBackend implements Backend {
  readonly location: string;
  readonly objects = new Map<string, Buffer>();
  /** How many bytes `load` has returned, for tests that prove a ranged read. */
  bytesLoaded = 0;

  /**
   * `saveTakesATurn`: a save lands a turn of the event loop after the call, as on a real store,
   * so a cancel in the meantime takes effect (the contract suite asks for it). By default a save
   * lands at once, which the repository's tests rely on to see packs stored in a known order.
   */
  constructor(
    location = 'memory:test',
    private readonly options: { saveTakesATurn?: boolean } = {},
  ) {
    this.location = location;
  }

  private key(type: ObjectType, name: string): string {
    return `${type}/${name}`;
  }

  private found(type: ObjectType, name: string): Buffer {
    checkObjectName(type, name);
    const data = this.objects.get(this.key(type, name));
    if (data === undefined) throw new BackendError(`${describeObject(type, name)} not found`, { kind: 'not-found' });
    return data;
  }

  async save(type: ObjectType, name: string, data: Uint8Array, options: CallOptions = {}): Promise<void> {
    options.signal?.throwIfAborted();
    checkObjectName(type, name);
    const copy = Buffer.from(data);
    if (this.options.saveTakesATurn === true) {
      await nextTurn();
      options.signal?.throwIfAborted();
    }
    this.objects.set(this.key(type, name), copy);
  }

  async load(type: ObjectType, name: string, options: LoadOptions = {}): Promise<Buffer> {
    options.signal?.throwIfAborted();
    const data = this.found(type, name);
    if (options.offset === undefined && options.length === undefined) {
      this.bytesLoaded += data.length;
      return Buffer.from(data);
    }
    const { offset, length } = options;
    if (offset === undefined || length === undefined)
      throw new BackendError(`${describeObject(type, name)}: a ranged load needs both offset and length`);
    if (offset < 0 || length < 0 || offset + length > data.length) {
      throw new BackendError(`${type}/${name}: short read (${offset}+${length} of ${data.length})`);
    }
    this.bytesLoaded += length;
    return Buffer.from(data.subarray(offset, offset + length));
  }

  async stat(type: ObjectType, name: string, options: CallOptions = {}): Promise<ObjectInfo> {
    options.signal?.throwIfAborted();
    return { name, size: this.found(type, name).length };
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
    checkObjectName(type, name);
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
