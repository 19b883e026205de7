// What the writer-rpc tests share: a fake writer that records its calls, the data it answers
// with, a served fake on a fresh socket, and helpers for raw calls, failures and child processes.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import { connectWriter, serveWriter, type RemoteWriterEndpoint, type WriterServer } from './index.ts';

export const METADATA: WriterMetadata = {
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
      readableAfterThaw: false,
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
      readableAfterThaw: false,
      files: [{ path: '/srv/shop/uploads', pattern: '*', recursive: true, isLog: false }],
    },
  ],
  backupTypes: ['full', 'copy', 'incremental', 'differential'],
  restoreMethod: 'stop-restore-start',
};

export const POST_SNAPSHOT: PostSnapshotResponse = {
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

export interface Call {
  method: string;
  request: unknown;
}

/** A writer that records what it is asked and answers from fixed data; tests steer it through its fields. */
export class FakeWriter implements WriterEndpoint {
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

export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
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

export async function waitFor(what: string, predicate: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
  return Date.now() - start;
}

/** One call with raw bytes, past every client-side check. */
export async function rawCall(address: string, rpc: string, bytes: Buffer): Promise<grpc.ServiceError | Buffer> {
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

export function assertStatus(
  result: grpc.ServiceError | Buffer,
  code: grpc.status,
  detailsPattern?: RegExp,
): grpc.ServiceError {
  assert.ok(!Buffer.isBuffer(result), 'expected the call to fail');
  assert.equal(result.code, code, `status ${grpc.status[result.code]}: ${result.details}`);
  if (detailsPattern) assert.match(result.details, detailsPattern);
  return result;
}

export async function rejectsWith(
  promise: Promise<unknown>,
  check: (error: QuiesceError) => void,
): Promise<QuiesceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof QuiesceError, `expected a QuiesceError, got ${String(error)}`);
    check(error);
    return error;
  }
  return assert.fail('expected a rejection');
}

/** A process of test/fixtures/rpc/, run with tsx. */
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/rpc/${name}`, import.meta.url));

export function spawnFixture(name: string, args: string[]): { child: ChildProcess; line: Promise<string> } {
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

/** A FakeWriter served on `<dir>/run/writers/shop.sock` of a fresh directory, and a client of it. */
export interface ServedFake {
  dir: string;
  socketPath: string;
  fake: FakeWriter;
  server: WriterServer;
  writer: RemoteWriterEndpoint;
  /** Closes the client and the server, and removes the directory. */
  stop(): Promise<void>;
}

export async function serveFake(): Promise<ServedFake> {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-rpc-'));
  const socketPath = join(dir, 'run', 'writers', 'shop.sock');
  const fake = new FakeWriter();
  const server = await serveWriter(fake, socketPath);
  const writer = connectWriter(socketPath, { callTimeoutMs: 5000 });
  const stop = async () => {
    await writer.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { dir, socketPath, fake, server, writer, stop };
}
