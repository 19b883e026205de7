// The writer wire's sessions: a session ends on the writer's side when its requester goes away
// (closed, killed or hung), on the requester's when the writer stops; stale sockets are replaced.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import { connectWriter, serveWriter, type RemoteWriterEndpoint } from './index.ts';
import {
  FakeWriter,
  METADATA,
  rejectsWith,
  serveFake,
  sleep,
  spawnFixture,
  waitFor,
  type ServedFake,
} from './testing.ts';

let served: ServedFake;
let dir: string;
let socketPath: string;
let fake: FakeWriter;
let writer: RemoteWriterEndpoint;

before(async () => {
  served = await serveFake();
  ({ dir, socketPath, fake, writer } = served);
});

after(() => served.stop());

beforeEach(() => fake.reset());

describe('writer rpc over a Unix socket: sessions', () => {
  test('closing a session closes it on the writer', async () => {
    const session = await writer.openSession({ setId: 'set-a' });
    assert.deepEqual(fake.sessionsOpened.slice(-1), ['set-a']);
    assert.ok(!fake.sessionsClosed.includes('set-a'));
    await session.close();
    await waitFor('the writer to close the session', () => fake.sessionsClosed.includes('set-a'), 2000);
    assert.equal(session.lost.aborted, false);
  });

  test('a session the writer refuses rejects with its failure', async () => {
    fake.failure = new QuiesceError('retryable', 'this writer is busy with set other; try again when it ends', {
      phase: 'prepare-backup',
      writer: 'shop',
    });
    await rejectsWith(writer.openSession({ setId: 'set-b' }), (e) => {
      assert.equal(e.code, 'retryable');
      assert.equal(e.phase, 'prepare-backup');
      assert.equal(e.writer, 'shop');
    });
  });

  test('a requester killed with SIGKILL closes its session on the writer within 2 s', { timeout: 15_000 }, async () => {
    const { child, line } = spawnFixture('session-child.ts', [socketPath, 'set-child']);
    try {
      assert.equal(await line, 'opened');
      assert.ok(fake.sessionsOpened.includes('set-child'));
      const killedAt = Date.now();
      child.kill('SIGKILL');
      await waitFor(
        "the writer to close the dead requester's session",
        () => fake.sessionsClosed.includes('set-child'),
        2000,
      );
      assert.ok(Date.now() - killedAt <= 2000);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test(
    'a requester that hangs (SIGSTOP, connection silent but open) loses its session by keepalive',
    { timeout: 15_000 },
    async () => {
      const { child, line } = spawnFixture('session-child.ts', [socketPath, 'set-hung']);
      try {
        assert.equal(await line, 'opened');
        const stoppedAt = Date.now();
        child.kill('SIGSTOP');
        // keepalive: a ping every 2 s, 1 s to answer.
        await waitFor(
          "the writer to close the hung requester's session",
          () => fake.sessionsClosed.includes('set-hung'),
          5000,
        );
        const after = Date.now() - stoppedAt;
        assert.ok(after <= 4000, `closed after ${after} ms`);
      } finally {
        child.kill('SIGKILL');
      }
    },
  );

  test('a writer that stops sending heartbeats loses its session on the requester', { timeout: 15_000 }, async () => {
    const childSocket = join(dir, 'stopped.sock');
    const { child, line } = spawnFixture('serve-child.ts', [childSocket, '200']);
    const client = connectWriter(childSocket, { callTimeoutMs: 5000 });
    try {
      assert.equal(await line, 'listening');
      const session = await client.openSession({ setId: 'set-stop' });
      await sleep(500);
      assert.equal(session.lost.aborted, false, 'heartbeats keep the session');
      const stoppedAt = Date.now();
      child.kill('SIGSTOP');
      await waitFor('the session to be lost', () => session.lost.aborted, 3000);
      assert.ok(Date.now() - stoppedAt < 2000, `lost after ${Date.now() - stoppedAt} ms`);
      const reason = session.lost.reason as QuiesceError;
      assert.equal(reason.code, 'not-responding');
      assert.match(reason.message, /heartbeat/);
      await session.close();
    } finally {
      child.kill('SIGKILL');
      await client.close();
    }
  });
});

describe('writer rpc over a Unix socket: server shutdown and socket files', () => {
  test('closing the server ends its sessions on both sides', async () => {
    const path = join(dir, 'closing.sock');
    const other = new FakeWriter();
    const closing = await serveWriter(other, path, { heartbeatIntervalMs: 200 });
    const client = connectWriter(path, { callTimeoutMs: 2000 });
    try {
      const session = await client.openSession({ setId: 'set-c' });
      await closing.close();
      assert.deepEqual(other.sessionsClosed, ['set-c']);
      await waitFor('the requester to see the session end', () => session.lost.aborted, 2000);
      assert.equal((session.lost.reason as QuiesceError).code, 'not-responding');
      await assert.rejects(stat(path), { code: 'ENOENT' });
    } finally {
      await client.close();
    }
  });

  test('a stale socket file is replaced; a live one or a regular file is not', async () => {
    const stalePath = join(dir, 'stale.sock');
    // A process that dies while listening leaves its socket file behind.
    spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    assert.ok((await stat(stalePath)).isSocket());
    const replacing = await serveWriter(new FakeWriter(), stalePath);
    const client = connectWriter(stalePath, { callTimeoutMs: 2000 });
    try {
      assert.deepEqual(await client.identify(), METADATA);
      await assert.rejects(serveWriter(new FakeWriter(), stalePath), (e: unknown) => {
        assert.ok(e instanceof QuiesceError && e.code === 'bad-config' && /already listening/.test(e.message));
        return true;
      });
    } finally {
      await client.close();
      await replacing.close();
    }

    const regular = join(dir, 'regular.sock');
    await writeFile(regular, 'not a socket');
    await assert.rejects(serveWriter(new FakeWriter(), regular), /is not a socket/);
  });
});
