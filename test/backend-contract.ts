// The tests every repository backend must pass (STYLE.md: one contract suite per plug-in kind).
// Each test gets a fresh, empty repository from `make` and cleans it up afterwards.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BackendError, OBJECT_TYPES, type Backend, type ObjectType } from '../src/repository/backend/index.ts';

export interface BackendFixture {
  backend: Backend;
  cleanup(): Promise<void>;
}

export interface BackendContractOptions {
  /** Objects in the big listing test; the default (1100) is more than one S3 list page of 1000. */
  manyObjects?: number;
  /**
   * Set (to the reason) when a save cut off mid-transfer may leave a torn object on this store,
   * which the real thing never does: only cancels that land before any byte is sent are tested.
   */
  tornOnCancel?: string;
  /** A remote store may have committed a save whose answer the cancel cut off: then it is whole. */
  cancelledSaveMayLand?: boolean;
}

/** A random content-style name: 64 lowercase hex digits. */
export function randomName(): string {
  return randomBytes(32).toString('hex');
}

export function nameFor(type: ObjectType): string {
  return type === 'config' ? 'config' : randomName();
}

export function isNotFound(error: unknown): boolean {
  return error instanceof BackendError && error.kind === 'not-found';
}

/** A `BackendError` that is neither not-found nor no-space (a short read, a bad name...). */
export function isPlainBackendError(error: unknown): boolean {
  return error instanceof BackendError && error.kind === 'other';
}

export async function listNames(backend: Backend, type: ObjectType): Promise<string[]> {
  const names: string[] = [];
  for await (const info of backend.list(type)) names.push(info.name);
  return names.sort();
}

/** Runs `body` on a fresh backend from `make`, closed and cleaned up afterwards. */
type WithBackend = (body: (backend: Backend) => Promise<void>) => Promise<void>;

export function runBackendContract(
  name: string,
  make: () => Promise<BackendFixture>,
  options: BackendContractOptions = {},
): void {
  const withBackend: WithBackend = async (body) => {
    const fixture = await make();
    try {
      await body(fixture.backend);
    } finally {
      await fixture.backend.close();
      await fixture.cleanup();
    }
  };

  describe(`${name} backend contract`, () => {
    objectContract(withBackend);
    namespaceContract(withBackend, options.manyObjects ?? 1100);
    cancelContract(withBackend, options);
  });
}

/** Saving and loading: every type, empty and binary objects, ranged loads. */
function objectContract(withBackend: WithBackend): void {
  test('exists() is false on an empty repository and true once config is saved', () =>
    withBackend(async (backend) => {
      assert.equal(await backend.exists(), false);
      assert.deepEqual(await listNames(backend, 'config'), []);
      await backend.save('config', 'config', Buffer.from('{"version":1}'));
      assert.equal(await backend.exists(), true);
      assert.deepEqual(await listNames(backend, 'config'), ['config']);
      await backend.remove('config', 'config');
      assert.equal(await backend.exists(), false);
    }));

  test('save and load round-trip an object of every type, each in its own namespace', () =>
    withBackend(async (backend) => {
      const saved = new Map<ObjectType, { name: string; data: Buffer }>();
      for (const [i, type] of OBJECT_TYPES.entries()) {
        const entry = { name: nameFor(type), data: randomBytes(1000 + i * 777) };
        saved.set(type, entry);
        await backend.save(type, entry.name, entry.data);
      }
      for (const type of OBJECT_TYPES) {
        const { name: objectName, data } = saved.get(type)!;
        assert.deepEqual(await backend.load(type, objectName), data, `${type} round trip`);
        assert.deepEqual(await backend.stat(type, objectName), { name: objectName, size: data.length });
        const listed: { name: string; size: number }[] = [];
        for await (const info of backend.list(type)) listed.push(info);
        assert.deepEqual(listed, [{ name: objectName, size: data.length }], `list ${type} shows only its own object`);
      }
      // The same name under another type is another object.
      const shared = randomName();
      await backend.save('index', shared, Buffer.from('index'));
      await backend.save('manifests', shared, Buffer.from('manifest'));
      assert.equal((await backend.load('index', shared)).toString(), 'index');
      assert.equal((await backend.load('manifests', shared)).toString(), 'manifest');
    }));

  test('an empty object round-trips', () =>
    withBackend(async (backend) => {
      const objectName = randomName();
      await backend.save('keys', objectName, new Uint8Array(0));
      assert.equal((await backend.load('keys', objectName)).length, 0);
      assert.deepEqual(await backend.stat('keys', objectName), { name: objectName, size: 0 });
      assert.deepEqual(await listNames(backend, 'keys'), [objectName]);
    }));

  test('binary data with every byte value survives, from a view into a larger buffer too', () =>
    withBackend(async (backend) => {
      const everyByte = Buffer.alloc(256 * 64);
      for (let i = 0; i < everyByte.length; i++) everyByte[i] = i % 256;
      const data = Buffer.concat([everyByte, randomBytes(1 << 20), Buffer.from('\r\n\0\xff')]);
      const objectName = randomName();
      await backend.save('data', objectName, data);
      assert.ok((await backend.load('data', objectName)).equals(data));

      // A Uint8Array that is a window into a bigger ArrayBuffer: only the window is saved.
      const big = new Uint8Array(10_000).map((_, i) => (i * 7) % 256);
      const view = big.subarray(1234, 5678);
      const viewName = randomName();
      await backend.save('data', viewName, view);
      assert.ok((await backend.load('data', viewName)).equals(Buffer.from(view)));
      assert.equal((await backend.stat('data', viewName)).size, view.length);
    }));

  test('a ranged load returns exactly those bytes, and a range past the end is an error', () =>
    withBackend(async (backend) => {
      const data = randomBytes(100_000);
      const objectName = randomName();
      await backend.save('data', objectName, data);
      for (const [offset, length] of [
        [0, 1],
        [0, data.length],
        [data.length - 1, 1],
        [12_345, 1000],
        [99_000, 1000],
        [500, 0],
        [data.length, 0],
      ] as const) {
        const part = await backend.load('data', objectName, { offset, length });
        assert.ok(part.equals(data.subarray(offset, offset + length)), `range ${offset}+${length}`);
      }
      for (const [offset, length] of [
        [data.length - 10, 20],
        [data.length + 5, 1],
        [data.length + 5, 0],
      ] as const) {
        await assert.rejects(
          backend.load('data', objectName, { offset, length }),
          isPlainBackendError,
          `short read ${offset}+${length}`,
        );
      }
      await assert.rejects(backend.load('data', randomName(), { offset: 0, length: 10 }), isNotFound);
      await assert.rejects(backend.load('data', objectName, { offset: 10 }), BackendError);
      // Memory given to read into (used or not) changes nothing but where the bytes land.
      const memory = new Uint8Array(64 * 1024).fill(0xee);
      const into = (length: number) => new Uint8Array(memory.buffer, 0, length);
      const part = await backend.load('data', objectName, { offset: 3000, length: 5000, into });
      assert.ok(part.equals(data.subarray(3000, 8000)), 'a load into given memory');
      assert.equal(part.length, 5000);
    }));
}

/** Finding objects: stat, missing objects, listing, removal, streamed writes, replaced locks. */
function namespaceContract(withBackend: WithBackend, manyObjects: number): void {
  test('stat gives the size, and notFound for a missing object', () =>
    withBackend(async (backend) => {
      const objectName = randomName();
      await backend.save('index', objectName, randomBytes(4321));
      assert.deepEqual(await backend.stat('index', objectName), { name: objectName, size: 4321 });
      await assert.rejects(backend.stat('index', randomName()), isNotFound);
      await assert.rejects(backend.stat('config', 'config'), isNotFound);
    }));

  test('loading a missing object of any type throws notFound', () =>
    withBackend(async (backend) => {
      for (const type of OBJECT_TYPES) await assert.rejects(backend.load(type, nameFor(type)), isNotFound, type);
      // A missing data object whose fan-out folder exists, and one whose folder does not.
      const present = randomName();
      await backend.save('data', present, Buffer.from('x'));
      await assert.rejects(backend.load('data', `${present.slice(0, 2)}${randomName().slice(2)}`), isNotFound);
    }));

  test(`list yields all and only the complete objects (${manyObjects} of them), once each`, () =>
    withBackend(async (backend) => {
      const names = Array.from({ length: manyObjects }, () => randomName());
      const dataNames = Array.from({ length: 40 }, () => randomName());
      for (let i = 0; i < names.length; i += 32) {
        await Promise.all(
          names
            .slice(i, i + 32)
            .map((n) => backend.save('index', n, Buffer.from(n.slice(0, 1 + (n.charCodeAt(0) % 7))))),
        );
      }
      await Promise.all(dataNames.map((n) => backend.save('data', n, Buffer.from(n))));
      const listed: { name: string; size: number }[] = [];
      for await (const info of backend.list('index')) listed.push(info);
      assert.equal(listed.length, names.length, 'no object missing, none twice');
      assert.deepEqual(listed.map((info) => info.name).sort(), [...names].sort());
      for (const info of listed) assert.equal(info.size, 1 + (info.name.charCodeAt(0) % 7), `size of ${info.name}`);
      assert.deepEqual(await listNames(backend, 'data'), [...dataNames].sort());
      assert.deepEqual(await listNames(backend, 'manifests'), []);
      // Stopping a listing early is fine.
      for await (const _ of backend.list('index')) break;
    }));

  test('remove deletes the object and is idempotent', () =>
    withBackend(async (backend) => {
      const objectName = randomName();
      const keep = randomName();
      await backend.save('data', objectName, Buffer.from('gone soon'));
      await backend.save('data', keep, Buffer.from('stays'));
      await backend.remove('data', objectName);
      await assert.rejects(backend.load('data', objectName), isNotFound);
      assert.deepEqual(await listNames(backend, 'data'), [keep]);
      await backend.remove('data', objectName);
      await backend.remove('locks', randomName());
      await backend.remove('config', 'config');
      assert.equal((await backend.load('data', keep)).toString(), 'stays');
    }));

  test('an object written piece by piece (where the backend offers it) is listed only once committed, and an aborted one leaves nothing', (t) =>
    withBackend(async (backend) => {
      if (backend.createWriter === undefined) {
        t.skip('this backend has no createWriter: packs are saved whole');
        return;
      }
      const pieces = [randomBytes(100_000), randomBytes(1), randomBytes(300_000)];
      const whole = Buffer.concat(pieces);
      const writer = await backend.createWriter('data');
      for (const piece of pieces) await writer.write(piece);
      assert.deepEqual(await writer.read(99_990, 20), whole.subarray(99_990, 100_010), 'read back before the commit');
      await assert.rejects(writer.read(whole.length - 1, 2), isPlainBackendError, 'not past what was written');
      assert.deepEqual(await listNames(backend, 'data'), [], 'not listed before the commit');
      const objectName = randomName();
      await writer.commit(objectName);
      assert.deepEqual(await backend.load('data', objectName), whole);
      assert.deepEqual(await writer.read(5, 10), whole.subarray(5, 15), 'and after');
      assert.deepEqual(await listNames(backend, 'data'), [objectName]);
      await assert.rejects(writer.write(Buffer.from('late')), isPlainBackendError);

      const dropped = await backend.createWriter('data');
      await dropped.write(randomBytes(1000));
      await dropped.abort();
      await dropped.abort();
      assert.deepEqual(await listNames(backend, 'data'), [objectName]);
    }));

  test('a lock object can be replaced by saving it again', () =>
    withBackend(async (backend) => {
      const objectName = randomName();
      await backend.save('locks', objectName, Buffer.from('{"time":"first","pid":1}'));
      const second = Buffer.from('{"time":"second, refreshed","pid":1}');
      await backend.save('locks', objectName, second);
      assert.deepEqual(await backend.load('locks', objectName), second);
      assert.deepEqual(await backend.stat('locks', objectName), { name: objectName, size: second.length });
      assert.deepEqual(await listNames(backend, 'locks'), [objectName]);
    }));
}

/** Cancellation and refusal: cancelled saves, aborted signals, names outside the namespace. */
function cancelContract(withBackend: WithBackend, options: BackendContractOptions): void {
  test('a save cancelled by its signal leaves no object (or, if it won the race, a whole one)', (t) =>
    withBackend(async (backend) => {
      const early = new AbortController();
      const reason = new Error('test cancelled early');
      early.abort(reason);
      const earlyName = randomName();
      await assert.rejects(
        backend.save('data', earlyName, randomBytes(1000), { signal: early.signal }),
        (error) => error === reason,
      );
      await assert.rejects(backend.stat('data', earlyName), isNotFound);

      const big = randomBytes(8 << 20);
      const outcomes: string[] = [];
      const points = ['microtask', 'immediate', '2ms', '10ms', '40ms'] as const;
      if (options.tornOnCancel !== undefined) t.diagnostic(`only cancels before any I/O: ${options.tornOnCancel}`);
      for (const when of options.tornOnCancel === undefined ? points : points.slice(0, 2)) {
        const controller = new AbortController();
        const objectName = randomName();
        const saving = backend.save('data', objectName, big, { signal: controller.signal });
        const cancel = (): void => controller.abort(new Error(`cancelled at ${when}`));
        if (when === 'microtask') queueMicrotask(cancel);
        else if (when === 'immediate') setImmediate(cancel);
        else setTimeout(cancel, Number.parseInt(when, 10));
        const outcome = await saving.then(
          () => 'saved',
          (error: unknown) => {
            assert.equal(error, controller.signal.reason, 'rejects with the abort reason');
            return 'cancelled';
          },
        );
        outcomes.push(`${when}: ${outcome}`);
        if (outcome === 'cancelled' && options.cancelledSaveMayLand === true) {
          const landed = await backend.load('data', objectName).catch((error: unknown) => {
            assert.ok(isNotFound(error), String(error));
            return undefined;
          });
          if (landed !== undefined) {
            assert.ok(landed.equals(big), `a cancelled save at ${when} left a torn object`);
            outcomes.push(`${when}: landed whole before the cancel`);
          }
        } else if (outcome === 'cancelled') {
          await assert.rejects(
            backend.stat('data', objectName),
            isNotFound,
            `nothing visible after a cancel at ${when}`,
          );
        } else {
          assert.ok(
            (await backend.load('data', objectName)).equals(big),
            `a whole object after a save that won the race at ${when}`,
          );
        }
      }
      assert.ok(outcomes[0]?.endsWith('cancelled'), `a cancel before any I/O takes effect (${outcomes.join(', ')})`);
      t.diagnostic(outcomes.join(', '));
      const visible = await listNames(backend, 'data');
      for (const n of visible) assert.equal((await backend.stat('data', n)).size, big.length, 'no torn object listed');
    }));

  test('an aborted signal stops load, stat, list, remove and exists before they start', () =>
    withBackend(async (backend) => {
      const objectName = randomName();
      await backend.save('index', objectName, Buffer.from('x'));
      const controller = new AbortController();
      const reason = new Error('stop');
      controller.abort(reason);
      const signal = controller.signal;
      const isReason = (error: unknown): boolean => error === reason;
      await assert.rejects(backend.load('index', objectName, { signal }), isReason);
      await assert.rejects(backend.stat('index', objectName, { signal }), isReason);
      await assert.rejects(backend.remove('index', objectName, { signal }), isReason);
      await assert.rejects(backend.exists({ signal }), isReason);
      await assert.rejects(
        (async () => {
          for await (const _ of backend.list('index', { signal })) assert.fail('listed despite the abort');
        })(),
        isReason,
      );
      assert.equal((await backend.load('index', objectName)).toString(), 'x', 'an aborted remove removed nothing');
    }));

  test('names that are not lowercase hex are refused, so nothing escapes its namespace', () =>
    withBackend(async (backend) => {
      for (const bad of ['', '../config', 'ABCDEF', 'a/b', '0', 'config', ' 00']) {
        await assert.rejects(
          backend.save('data', bad, Buffer.from('x')),
          isPlainBackendError,
          `save data ${JSON.stringify(bad)}`,
        );
        await assert.rejects(backend.load('index', bad), isPlainBackendError, `load index ${JSON.stringify(bad)}`);
      }
      await assert.rejects(backend.save('config', 'abcd', Buffer.from('x')), isPlainBackendError);
      assert.equal(await backend.exists(), false);
    }));
}
