// The writer wire over a real Unix socket: every method round-trips, failures arrive intact,
// bad and oversized input is refused without hurting the server, cancellation reaches the
// writer, and a session ends on the writer's side when its requester goes away.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  QuiesceError,
  type BackupCompleteRequest,
  type CallOptions,
  type PostSnapshotRequest,
  type PostSnapshotResponse,
  type PrepareBackupRequest,
  type PrepareBackupResponse,
  type RestoreRequest,
  type WriterEndpoint,
  type WriterMetadata,
  type WriterStatus,
} from '../model/index.ts';
import {
  FAILURE_METADATA_KEY,
  MAX_MESSAGE_BYTES,
  connectWriter,
  loadWriterService,
  serveWriter,
  type RemoteWriterEndpoint,
  type WriterServer,
} from './index.ts';

const METADATA: WriterMetadata = {
  name: 'shop',
  classId: 'quiesce.sqlite',
  instanceId: '/srv/shop/shop.db',
  usage: 'back-end',
  components: [
    {
      name: 'shop.db',
      logicalPath: 'shop',
      kind: 'database',
      selectable: true,
      files: [
        { path: '/srv/shop', pattern: 'shop.db', recursive: false, isLog: false },
        { path: '/srv/shop', pattern: 'shop.db-wal', recursive: false, isLog: true },
      ],
    },
    {
      name: 'uploads',
      logicalPath: '',
      kind: 'files',
      selectable: false,
      files: [{ path: '/srv/shop/uploads', pattern: '*', recursive: true, isLog: false }],
    },
  ],
  backupTypes: ['full', 'copy', 'incremental', 'differential'],
  restoreMethod: 'stop-restore-start',
};

const POST_SNAPSHOT: PostSnapshotResponse = {
  components: [
    {
      component: 'shop/shop.db',
      newStamp: 'sqlite:v1:{"pages":2097152,"changeCounter":88121}',
      partialFiles: [
        {
          path: '/srv/shop/shop.db',
          size: 8_589_934_592,
          ranges: [
            { offset: 0, length: 4096 },
            { offset: 6_442_450_944, length: 65_536 },
          ],
        },
      ],
    },
    // No list: read whole files.
    { component: 'uploads', newStamp: '' },
    // An empty list: nothing changed.
    { component: 'shop/logs', partialFiles: [] },
  ],
};

interface Call {
  method: string;
  request: unknown;
}

/** A writer that records what it is asked and answers from fixed data; tests steer it through its fields. */
class FakeWriter implements WriterEndpoint {
  calls: Call[] = [];
  sessionsOpened: string[] = [];
  sessionsClosed: string[] = [];
  /** Thrown by the next phase call, when set. */
  failure: Error | null = null;
  /** How long freeze holds before answering; it gives up early when its signal aborts. */
  freezeDelayMs = 0;
  freezeSignals: AbortSignal[] = [];
  postSnapshotAnswer: PostSnapshotResponse = POST_SNAPSHOT;
  status_: WriterStatus = { metadata: METADATA, state: 'stable', setId: null, lastFailure: null };

  reset(): void {
    this.calls = [];
    this.failure = null;
    this.freezeDelayMs = 0;
    this.freezeSignals = [];
    this.postSnapshotAnswer = POST_SNAPSHOT;
  }

  private record(method: string, request?: unknown): void {
    this.calls.push({ method, request });
    if (this.failure !== null) throw this.failure;
  }

  async identify(): Promise<WriterMetadata> {
    this.record('identify');
    return METADATA;
  }
  async status(): Promise<WriterStatus> {
    this.record('status');
    return this.status_;
  }
  async prepareBackup(request: PrepareBackupRequest): Promise<PrepareBackupResponse> {
    this.record('prepareBackup', request);
    return {
      components: request.components.map((c) =>
        c.previousStamp === undefined
          ? {
              component: c.component,
              actualType: 'full',
              typeReason: 'no-base',
              typeMessage: 'no earlier backup: taking a full one',
            }
          : { component: c.component, actualType: request.backupType },
      ),
    };
  }
  async prepareSnapshot(request: { setId: string }): Promise<void> {
    this.record('prepareSnapshot', request);
  }
  async freeze(request: { setId: string; thawDeadlineMs: number }, options?: CallOptions): Promise<void> {
    this.record('freeze', request);
    const signal = options?.signal ?? new AbortController().signal;
    this.freezeSignals.push(signal);
    if (this.freezeDelayMs > 0) await sleep(this.freezeDelayMs, signal);
  }
  async thaw(request: { setId: string }) {
    this.record('thaw', request);
    return { selfThawed: true, frozenMs: 60_000.25 };
  }
  async postSnapshot(request: PostSnapshotRequest): Promise<PostSnapshotResponse> {
    this.record('postSnapshot', request);
    return this.postSnapshotAnswer;
  }
  async backupComplete(request: BackupCompleteRequest): Promise<void> {
    this.record('backupComplete', request);
  }
  async abort(request: { setId: string }): Promise<void> {
    this.record('abort', request);
  }
  async shutdown(request: { setId: string }): Promise<void> {
    this.record('shutdown', request);
  }
  async preRestore(request: RestoreRequest): Promise<void> {
    this.record('preRestore', request);
  }
  async postRestore(request: RestoreRequest): Promise<void> {
    this.record('postRestore', request);
  }
  async openSession(request: { setId: string }) {
    this.record('openSession', request);
    this.sessionsOpened.push(request.setId);
    return {
      close: async () => {
        this.sessionsClosed.push(request.setId);
      },
    };
  }
  async close(): Promise<void> {}
}

async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
  return Date.now() - start;
}

/** One call with raw bytes, past every client-side check. */
async function rawCall(address: string, rpc: string, bytes: Buffer): Promise<grpc.ServiceError | Buffer> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<grpc.ServiceError | Buffer>((resolve) => {
      client.makeUnaryRequest(
        `/quiesce.v1.WriterService/${rpc}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (error, value) => resolve(error ?? value ?? Buffer.alloc(0)),
      );
    });
  } finally {
    client.close();
  }
}

function assertStatus(
  result: grpc.ServiceError | Buffer,
  code: grpc.status,
  detailsPattern?: RegExp,
): grpc.ServiceError {
  assert.ok(!Buffer.isBuffer(result), 'expected the call to fail');
  assert.equal(result.code, code, `status ${grpc.status[result.code]}: ${result.details}`);
  if (detailsPattern) assert.match(result.details, detailsPattern);
  return result;
}

async function rejectsWith(promise: Promise<unknown>, check: (error: QuiesceError) => void): Promise<QuiesceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof QuiesceError, `expected a QuiesceError, got ${String(error)}`);
    check(error);
    return error;
  }
  return assert.fail('expected a rejection');
}

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

function spawnFixture(name: string, args: string[]): { child: ChildProcess; line: Promise<string> } {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture(name), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const line = new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const end = out.indexOf('\n');
      if (end >= 0) resolve(out.slice(0, end));
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`${name} exited (${code ?? signal}) before its first line: ${stderr}`)),
    );
  });
  return { child, line };
}

describe('writer rpc over a Unix socket', () => {
  let dir: string;
  let socketPath: string;
  let fake: FakeWriter;
  let server: WriterServer;
  let writer: RemoteWriterEndpoint;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'quiesce-rpc-'));
    socketPath = join(dir, 'run', 'writers', 'shop.sock');
    fake = new FakeWriter();
    server = await serveWriter(fake, socketPath);
    writer = connectWriter(socketPath, { callTimeoutMs: 5000 });
  });

  after(async () => {
    await writer.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => fake.reset());

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
