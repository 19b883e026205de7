import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../model/index.ts';
import { MemoryBackend } from './backend/memory-backend.ts';
import { seal } from './crypto/seal.ts';
import { Locker, type LockRecord } from './locks.ts';
import { processStart } from '../util/index.ts';

const KEY = Buffer.alloc(32, 9);
const locked = (error: unknown): boolean => error instanceof QuiesceError && error.code === 'locked';

function plant(backend: MemoryBackend, name: string, record: LockRecord): void {
  backend.put('locks', name, seal(KEY, Buffer.from(JSON.stringify(record))));
}

/** A pid that is surely dead: a child that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('locks', () => {
  test('shared locks coexist; exclusive excludes everything', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY);
    const a = await locker.lock('shared');
    const b = await locker.lock('shared');
    await assert.rejects(locker.lock('exclusive'), locked);
    await a.release();
    await assert.rejects(locker.lock('exclusive'), locked);
    await b.release();
    assert.equal(backend.names('locks').length, 0, 'released locks are removed');
    const x = await locker.lock('exclusive');
    await assert.rejects(
      locker.lock('shared'),
      (e: unknown) =>
        locked(e) && /: an exclusive lock by pid .* in the way of a shared lock\./.test((e as Error).message),
    );
    await assert.rejects(locker.lock('exclusive'), locked);
    await x.release();
    await x.release(); // idempotent
    {
      await using _held = await locker.lock('exclusive');
      assert.equal(backend.names('locks').length, 1);
    }
    assert.equal(backend.names('locks').length, 0, 'await using releases');
  });

  test('a lock of a dead process on this host, or one not refreshed for 30 minutes, is stale', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY);
    const now = new Date().toISOString();
    plant(backend, 'a'.repeat(64), {
      kind: 'exclusive',
      hostname: hostname(),
      pid: await deadPid(),
      time: now,
      refreshed: now,
    });
    const old = new Date(Date.now() - 31 * 60_000).toISOString();
    plant(backend, 'b'.repeat(64), { kind: 'exclusive', hostname: 'elsewhere', pid: 1, time: old, refreshed: old });
    const shared = await locker.lock('shared');
    await shared.release();
    assert.equal(backend.names('locks').length, 2, 'shared lockers leave stale locks');
    const x = await locker.lock('exclusive');
    assert.equal(backend.names('locks').length, 1, 'exclusive lockers remove stale locks');
    await x.release();
    // A live lock on another host, refreshed recently, holds.
    plant(backend, 'c'.repeat(64), { kind: 'exclusive', hostname: 'elsewhere', pid: 1, time: old, refreshed: now });
    await assert.rejects(
      locker.lock('shared'),
      (e: unknown) => locked(e) && (e as Error).message.includes('elsewhere'),
    );
  });

  test('a lock whose pid now runs another process (pid reuse) is stale; the same process holds', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY);
    const now = new Date().toISOString();
    const mine = { kind: 'exclusive' as const, hostname: hostname(), pid: process.pid, time: now, refreshed: now };
    assert.equal(locker.isStale({ ...mine, start: 'another-boot:1' }), true, 'our pid, started at another time');
    assert.equal(locker.isStale({ ...mine, start: processStart(process.pid) }), false, 'our own process');
    assert.equal(locker.isStale(mine), false, 'an older lock without its start: the pid alone');
  });

  test('a lock a crash left empty or half-written (locks are not synced) stands in nobody’s way', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY);
    backend.put('locks', 'd'.repeat(64), Buffer.alloc(0));
    const whole = seal(
      KEY,
      Buffer.from(
        JSON.stringify({
          kind: 'exclusive',
          hostname: 'elsewhere',
          pid: 1,
          time: 'x',
          refreshed: new Date().toISOString(),
        }),
      ),
    );
    backend.put('locks', 'e'.repeat(64), whole.subarray(0, whole.length >> 1));
    const shared = await locker.lock('shared');
    await shared.release();
    const x = await locker.lock('exclusive');
    assert.deepEqual(backend.names('locks').length, 1, 'an exclusive locker removes them, keeping only its own');
    await x.release();
    assert.deepEqual(backend.names('locks'), []);
  });

  test('a conflicting lock that appears while we lock makes us back off', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY);
    // Another process writes its exclusive lock right after our first listing.
    const original = backend.save.bind(backend);
    let raced = false;
    backend.save = async (type, name, data, options) => {
      await original(type, name, data, options);
      if (type === 'locks' && !raced) {
        raced = true;
        const now = new Date().toISOString();
        plant(backend, 'd'.repeat(64), { kind: 'exclusive', hostname: 'elsewhere', pid: 7, time: now, refreshed: now });
      }
    };
    await assert.rejects(locker.lock('shared'), locked);
    assert.deepEqual(backend.names('locks'), ['d'.repeat(64)], 'we removed our own lock');
  });

  test('a held lock is refreshed', async () => {
    const backend = new MemoryBackend();
    const locker = new Locker(backend, KEY, { refreshMs: 20 });
    const held = await locker.lock('shared');
    const [name] = backend.names('locks');
    const first = backend.get('locks', name!);
    await sleep(80);
    assert.notDeepEqual(backend.get('locks', name!), first);
    await held.release();
    assert.equal(backend.names('locks').length, 0);
  });
});
