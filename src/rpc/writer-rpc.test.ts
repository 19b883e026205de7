// The writer wire over a real Unix socket: the socket is private, every method round-trips,
// failures arrive intact, and an invalid answer is refused by the client.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import {
  QuiesceError,
  type BackupCompleteRequest,
  type PostSnapshotRequest,
  type PrepareBackupRequest,
  type RestoreRequest,
  type WriterStatus,
} from '../model/index.ts';
import {
  FAILURE_METADATA_KEY,
  connectWriter,
  loadWriterService,
  type RemoteWriterEndpoint,
  type WriterServer,
} from './index.ts';
import { FakeWriter, METADATA, POST_SNAPSHOT, rejectsWith, serveFake, type ServedFake } from './testing.ts';

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

describe('writer rpc over a Unix socket: round trips', () => {
  test('the socket is private: directory 0700, socket 0600', async () => {
    assert.equal(server.address, `unix://${socketPath}`);
    assert.equal((await stat(join(dir, 'run', 'writers'))).mode & 0o777, 0o700);
    const socket = await stat(socketPath);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
  });

  test('every method round-trips with its data', async () => {
    assert.deepEqual(await writer.identify(), METADATA);
    assert.deepEqual(await writer.status(), { metadata: METADATA, state: 'stable', setId: null, lastFailure: null });

    const busy: WriterStatus = {
      metadata: METADATA,
      state: 'failed-at-freeze',
      setId: 'set-2024.06.01_a',
      lastFailure: {
        code: 'timeout',
        phase: 'freeze',
        writer: 'shop',
        component: null,
        message: 'frozen 61 s; thawed itself',
      },
    };
    fake.status_ = busy;
    assert.deepEqual(await writer.status(), busy);
    fake.status_ = { metadata: METADATA, state: 'stable', setId: null, lastFailure: null };

    const setId = 'set-2024.06.01_a';
    const prepare: PrepareBackupRequest = {
      setId,
      backupType: 'differential',
      components: [
        { component: 'shop/shop.db', previousStamp: 'sqlite:v1:{"changeCounter":80000}' },
        { component: 'uploads' },
      ],
    };
    assert.deepEqual(await writer.prepareBackup(prepare), {
      components: [
        { component: 'shop/shop.db', actualType: 'differential' },
        {
          component: 'uploads',
          actualType: 'full',
          typeReason: 'no-base',
          typeMessage: 'no earlier backup: taking a full one',
        },
      ],
    });
    assert.equal(await writer.prepareSnapshot({ setId }), undefined);
    assert.equal(await writer.freeze({ setId, thawDeadlineMs: 60_000 }), undefined);
    assert.deepEqual(await writer.thaw({ setId }), { selfThawed: true, frozenMs: 60_000.25 });
    const post: PostSnapshotRequest = {
      setId,
      snapshots: [
        { original: '/srv/shop', snapshot: '/run/quiesce/snapshots/set-2024.06.01_a/srv/shop' },
        { original: '/srv/shop/uploads', snapshot: '/run/quiesce/snapshots/set-2024.06.01_a/srv/shop/uploads' },
      ],
    };
    assert.deepEqual(await writer.postSnapshot(post), POST_SNAPSHOT);
    const complete: BackupCompleteRequest = {
      setId,
      backupType: 'differential',
      components: [
        {
          component: 'shop/shop.db',
          actualType: 'differential',
          succeeded: true,
          stamp: 'sqlite:v1:{"changeCounter":88121}',
        },
        { component: 'uploads', actualType: 'full', succeeded: false },
      ],
    };
    assert.equal(await writer.backupComplete(complete), undefined);
    assert.equal(await writer.abort({ setId }), undefined);
    assert.equal(await writer.shutdown({ setId }), undefined);
    const restore: RestoreRequest = {
      setId: 'restore-7',
      components: ['shop/shop.db'],
      target: '/srv/shop',
      moreFollow: true,
    };
    assert.equal(await writer.preRestore(restore), undefined);
    assert.equal(await writer.postRestore({ ...restore, moreFollow: false }), undefined);

    assert.deepEqual(fake.calls, [
      { method: 'identify', request: undefined },
      { method: 'status', request: undefined },
      { method: 'status', request: undefined },
      { method: 'prepareBackup', request: prepare },
      { method: 'prepareSnapshot', request: { setId } },
      { method: 'freeze', request: { setId, thawDeadlineMs: 60_000 } },
      { method: 'thaw', request: { setId } },
      { method: 'postSnapshot', request: post },
      { method: 'backupComplete', request: complete },
      { method: 'abort', request: { setId } },
      { method: 'shutdown', request: { setId } },
      { method: 'preRestore', request: restore },
      { method: 'postRestore', request: { ...restore, moreFollow: false } },
    ]);
  });
});

describe('writer rpc over a Unix socket: failures', () => {
  test("a writer's QuiesceError arrives with its code, phase, writer, component and message", async () => {
    fake.failure = new QuiesceError(
      'inconsistent-snapshot',
      'the WAL moved while the snapshot was taken; take the set again',
      {
        phase: 'post-snapshot',
        writer: 'shop',
        component: 'shop/shop.db',
      },
    );
    const error = await rejectsWith(writer.postSnapshot({ setId: 'set-1', snapshots: [] }), (e) => {
      assert.deepEqual(e.toJSON(), {
        code: 'inconsistent-snapshot',
        phase: 'post-snapshot',
        writer: 'shop',
        component: 'shop/shop.db',
        message: 'the WAL moved while the snapshot was taken; take the set again',
      });
    });
    // The status code is the documented hint; the failure itself rode in the trailers.
    const cause = error.cause as grpc.ServiceError;
    assert.equal(cause.code, grpc.status.DATA_LOSS);
    assert.ok(cause.metadata.get(FAILURE_METADATA_KEY).length === 1);

    fake.failure = new QuiesceError('retryable', 'a checkpoint is running; retry in a few seconds', { writer: 'shop' });
    await rejectsWith(writer.freeze({ setId: 'set-1', thawDeadlineMs: 1000 }), (e) => {
      assert.equal(e.code, 'retryable');
      assert.equal(e.phase, 'freeze', 'the server fills in the phase it was serving');
      assert.equal(e.writer, 'shop');
      assert.equal(e.component, null);
      assert.equal((e.cause as grpc.ServiceError).code, grpc.status.ABORTED);
    });

    fake.failure = new Error('ENOSPC: no space left on device');
    await rejectsWith(writer.prepareSnapshot({ setId: 'set-1' }), (e) => {
      assert.equal(e.code, 'nonretryable');
      assert.equal(e.phase, 'prepare-snapshot');
      assert.equal(e.message, 'ENOSPC: no space left on device');
    });

    // A message beyond the schema's limit is cut, not turned into a protocol error.
    fake.failure = new QuiesceError('nonretryable', '€'.repeat(20_000), { phase: 'identify' });
    await rejectsWith(writer.identify(), (e) => {
      assert.equal(e.code, 'nonretryable');
      assert.ok(e.message.length <= 8192 && e.message.startsWith('€€€'));
    });
  });

  test('an invalid answer is a protocol error on the client', async () => {
    const roguePath = join(dir, 'rogue.sock');
    const rogue = new grpc.Server();
    rogue.addService(loadWriterService(), {
      Identify: (_call: unknown, callback: grpc.sendUnaryData<object>) =>
        callback(null, { metadata: { ...METADATA, usage: 'sideways' } }),
      // A terse writer in another language: zero values and absent optionals only.
      Status: (_call: unknown, callback: grpc.sendUnaryData<object>) =>
        callback(null, {
          metadata: {
            name: 'terse',
            classId: 'acme.kv',
            instanceId: 'kv-1',
            usage: 'system',
            backupTypes: ['full'],
            components: [{ name: 'data', kind: 'files', files: [{ path: '/var/lib/kv' }] }],
          },
          state: 'stable',
        }),
    });
    await new Promise<void>((resolve, reject) =>
      rogue.bindAsync(`unix://${roguePath}`, grpc.ServerCredentials.createInsecure(), (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    const client = connectWriter(roguePath, { callTimeoutMs: 2000 });
    try {
      await rejectsWith(client.identify(), (e) => {
        assert.equal(e.code, 'protocol');
        assert.equal(e.phase, 'identify');
        assert.match(e.message, /usage: Invalid enum value/);
      });
      // Proto zero values stand for the model's defaults.
      assert.deepEqual(await client.status(), {
        metadata: {
          name: 'terse',
          classId: 'acme.kv',
          instanceId: 'kv-1',
          usage: 'system',
          backupTypes: ['full'],
          restoreMethod: 'restore-if-can-replace',
          components: [
            {
              name: 'data',
              logicalPath: '',
              kind: 'files',
              selectable: true,
              readableAfterThaw: false,
              files: [{ path: '/var/lib/kv', pattern: '*', recursive: false, isLog: false }],
            },
          ],
        },
        state: 'stable',
        setId: null,
        lastFailure: null,
      });
      // Methods the rogue does not implement: a protocol error too.
      await rejectsWith(client.thaw({ setId: 'set-1' }), (e) => {
        assert.equal(e.code, 'protocol');
        assert.match(e.message, /does not implement Thaw/);
      });
    } finally {
      await client.close();
      rogue.forceShutdown();
    }
  });
});
