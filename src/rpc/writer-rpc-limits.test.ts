// The writer wire's limits: bad and oversized input is refused without hurting the server,
// cancellation and deadlines reach the writer, and a socket nobody serves fails fast.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { QuiesceError, type PrepareBackupRequest } from '../model/index.ts';
import {
  FAILURE_METADATA_KEY,
  MAX_MESSAGE_BYTES,
  connectWriter,
  loadWriterService,
  type RemoteWriterEndpoint,
  type WriterServer,
} from './index.ts';
import {
  FakeWriter,
  METADATA,
  assertStatus,
  rawCall,
  rejectsWith,
  serveFake,
  waitFor,
  type ServedFake,
} from './testing.ts';

let served: ServedFake;
let dir: string;
let socketPath: string;
let fake: FakeWriter;
let server: WriterServer;
let writer: RemoteWriterEndpoint;

before(async () => {
  served = await serveFake();
  ({ dir, socketPath, fake, server, writer } = served);
});

after(() => served.stop());

beforeEach(() => fake.reset());

describe('writer rpc over a Unix socket: invalid and oversized input', () => {
  test('invalid requests get INVALID_ARGUMENT naming the field, and the server keeps serving', async () => {
    const service = loadWriterService();
    const garbage = await rawCall(server.address, 'Freeze', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
    assertStatus(garbage, grpc.status.INVALID_ARGUMENT, /not a valid protobuf message/);

    const emptySetId = await rawCall(
      server.address,
      'Freeze',
      service.Freeze.requestSerialize({ setId: '', thawDeadlineMs: 1000 }),
    );
    const refused = assertStatus(emptySetId, grpc.status.INVALID_ARGUMENT, /invalid Freeze request: setId:/);
    const failure = JSON.parse(refused.metadata.get(FAILURE_METADATA_KEY)[0]!.toString()) as {
      code: string;
      phase: string;
    };
    assert.equal(failure.code, 'protocol');
    assert.equal(failure.phase, 'freeze');

    const negative = await rawCall(
      server.address,
      'Freeze',
      service.Freeze.requestSerialize({ setId: 'set-1', thawDeadlineMs: -5 }),
    );
    assertStatus(negative, grpc.status.INVALID_ARGUMENT, /thawDeadlineMs: Number must be greater than 0/);

    const badSetId = await rawCall(
      server.address,
      'OpenSession',
      service.OpenSession.requestSerialize({ setId: '../etc' }),
    );
    assertStatus(badSetId, grpc.status.INVALID_ARGUMENT, /setId: a set id is letters/);

    // Through the client: an unknown enum word is a protocol error naming the field.
    const weekly = { setId: 'set-1', backupType: 'weekly', components: [] } as unknown as PrepareBackupRequest;
    await rejectsWith(writer.prepareBackup(weekly), (e) => {
      assert.equal(e.code, 'protocol');
      assert.equal(e.phase, 'prepare-backup');
      assert.match(e.message, /backupType: Invalid enum value/);
    });

    assert.deepEqual(fake.calls, [], 'nothing invalid reached the endpoint');
    await writer.freeze({ setId: 'set-1', thawDeadlineMs: 1000 });
    assert.deepEqual(fake.calls, [{ method: 'freeze', request: { setId: 'set-1', thawDeadlineMs: 1000 } }]);
  });

  test('oversized messages are refused both ways, and the server keeps serving', async () => {
    const oversized = await rawCall(server.address, 'PostSnapshot', Buffer.alloc(MAX_MESSAGE_BYTES + 1024));
    assertStatus(oversized, grpc.status.RESOURCE_EXHAUSTED);

    const path = '/srv/' + 'x'.repeat(4000);
    const snapshots = Array.from({ length: 4500 }, (_, i) => ({
      original: `${path}/${i}`,
      snapshot: `/snap${path}/${i}`,
    }));
    await rejectsWith(writer.postSnapshot({ setId: 'set-1', snapshots }), (e) => {
      assert.equal(e.code, 'protocol');
      assert.equal(e.phase, 'post-snapshot');
      assert.match(e.message, /16777216 bytes/);
    });
    assert.deepEqual(fake.calls, []);

    fake.postSnapshotAnswer = {
      components: [
        {
          component: 'files',
          partialFiles: snapshots.map((s) => ({ path: s.original, size: 1, ranges: [{ offset: 0, length: 1 }] })),
        },
      ],
    };
    await rejectsWith(writer.postSnapshot({ setId: 'set-1', snapshots: [] }), (e) => {
      assert.equal(e.code, 'protocol');
      assert.match(e.message, /16777216 bytes/);
    });

    assert.deepEqual(await writer.identify(), METADATA);
  });
});

describe('writer rpc over a Unix socket: cancellation and deadlines', () => {
  test('aborting the signal cancels a slow call promptly, on both ends', async () => {
    fake.freezeDelayMs = 10_000;
    const controller = new AbortController();
    const reason = new QuiesceError('timeout', 'the coordinator gave up on freeze', { phase: 'freeze' });
    const started = Date.now();
    setTimeout(() => controller.abort(reason), 100);
    await assert.rejects(
      writer.freeze({ setId: 'set-1', thawDeadlineMs: 60_000 }, { signal: controller.signal }),
      (error) => error === reason,
    );
    assert.ok(Date.now() - started < 1000, `rejected after ${Date.now() - started} ms`);
    await waitFor('the writer to see its signal abort', () => fake.freezeSignals[0]?.aborted === true, 2000);

    // An already aborted signal sends nothing.
    await assert.rejects(
      writer.thaw({ setId: 'set-1' }, { signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
    assert.equal(fake.calls.filter((c) => c.method === 'thaw').length, 0);
  });

  test('a call past its deadline is not-responding, and the writer sees the timeout', async () => {
    fake.freezeDelayMs = 10_000;
    const hasty = connectWriter(socketPath, { callTimeoutMs: 200 });
    try {
      const started = Date.now();
      await rejectsWith(hasty.freeze({ setId: 'set-1', thawDeadlineMs: 60_000 }), (e) => {
        assert.equal(e.code, 'not-responding');
        assert.equal(e.phase, 'freeze');
        assert.match(e.message, /within 200 ms/);
      });
      assert.ok(Date.now() - started < 2000, `rejected after ${Date.now() - started} ms`);
      await waitFor('the writer to see its deadline', () => fake.freezeSignals[0]?.aborted === true, 2000);
      const seen = fake.freezeSignals[0]?.reason as QuiesceError;
      assert.equal(seen.code, 'timeout', seen.message);
    } finally {
      await hasty.close();
    }
  });

  test('a socket nobody serves is not-responding, quickly, with a hint', async () => {
    const missing = join(dir, 'nobody.sock');
    const client = connectWriter(missing, { callTimeoutMs: 1000 });
    try {
      const started = Date.now();
      await rejectsWith(client.identify(), (e) => {
        assert.equal(e.code, 'not-responding');
        assert.ok(e.message.includes(missing), e.message);
        assert.match(e.message, /writer process running/);
      });
      await rejectsWith(client.openSession({ setId: 'set-1' }), (e) => assert.equal(e.code, 'not-responding'));
      assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
    } finally {
      await client.close();
    }
  });
});
