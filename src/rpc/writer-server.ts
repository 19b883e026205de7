/**
 * Serve a WriterEndpoint over gRPC on a Unix socket. Every request is validated before it
 * reaches the endpoint, every answer before it leaves; failures travel as described in
 * failure-status.ts; a session stream that ends (cancel, disconnect, peer death) closes the
 * endpoint's session.
 */
import * as grpc from '@grpc/grpc-js';
import { lstat, mkdir, chmod, stat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { ZodError } from 'zod';
import { QuiesceError, type WriterEndpoint, type WriterSession } from '../model/index.ts';
import {
  SessionRequestSchema,
  UNARY_METHODS,
  describeZodError,
  type SessionEvent,
  type UnaryMethod,
} from './convert.ts';
import { failureStatus, invalidRequestStatus } from './failure-status.ts';
import { MAX_MESSAGE_BYTES, loadWriterService, type WireMethod } from './writer-proto.ts';

export interface ServeWriterOptions {
  /** How often a session stream carries a heartbeat. Default 2000 ms. */
  heartbeatIntervalMs?: number;
  /** HTTP/2 keepalive ping period towards each requester. Default 2000 ms. */
  keepaliveTimeMs?: number;
  /** How long a keepalive ping may go unanswered before the connection counts as dead. Default 1000 ms. */
  keepaliveTimeoutMs?: number;
  /** How long `close()` waits for calls in flight before cutting them. Default 2000 ms. */
  shutdownGraceMs?: number;
  /** Errors no caller can receive (a session's close failed, a write to a dead stream). Default: ignored. */
  onError?: (error: unknown) => void;
}

export interface WriterServer {
  /** `unix:///absolute/path.sock` */
  readonly address: string;
  /**
   * Stop serving: end every open session (closing the endpoint's sessions), let calls in
   * flight finish for a grace period, cut the rest, remove the socket. Idempotent. Does not
   * close the endpoint itself.
   */
  close(): Promise<void>;
}

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2000;

const DEADLINE_SLACK_MS = 250;

/** Marks a request the proto decoder could not read, so the handler can answer INVALID_ARGUMENT. */
const UNDECODABLE = Symbol('undecodable');
interface Undecodable {
  [UNDECODABLE]: string;
}
function isUndecodable(value: unknown): value is Undecodable {
  return typeof value === 'object' && value !== null && UNDECODABLE in value;
}

/** The service with request decoders that never throw: gRPC would answer INTERNAL, we answer INVALID_ARGUMENT. */
function tolerantService<R extends string>(service: Record<R, WireMethod>): Record<R, WireMethod> {
  const out: Partial<Record<R, WireMethod>> = {};
  for (const [rpc, definition] of Object.entries(service) as [R, WireMethod][]) {
    out[rpc] = {
      ...definition,
      requestDeserialize: (bytes: Buffer): object => {
        try {
          return definition.requestDeserialize(bytes);
        } catch (error) {
          const undecodable: Undecodable = { [UNDECODABLE]: error instanceof Error ? error.message : String(error) };
          return undecodable;
        }
      },
    };
  }
  return out as Record<R, WireMethod>;
}

/** Parse a decoded request with the model's schema; the problem, naming the field, on failure. */
export function parseRequest<T>(
  raw: unknown,
  fromWire: (wire: unknown) => unknown,
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: ZodError } },
): { ok: true; value: T } | { ok: false; problem: string } {
  if (isUndecodable(raw)) return { ok: false, problem: `not a valid protobuf message (${raw[UNDECODABLE]})` };
  const parsed = schema.safeParse(fromWire(raw));
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, problem: describeZodError(parsed.error) };
}

/**
 * Why a call was cancelled, as far as the server can tell. The requester's own deadline timer
 * usually cancels a moment before ours fires, so a cancel close to the deadline counts as it.
 */
function cancellationReason(call: { getDeadline(): grpc.Deadline }, rpc: string): QuiesceError {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) && Date.now() >= at - DEADLINE_SLACK_MS
    ? new QuiesceError('timeout', `the requester's deadline for ${rpc} passed`)
    : new QuiesceError('retryable', `the requester cancelled ${rpc}`);
}

async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  let existing;
  try {
    existing = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!existing.isSocket()) {
    throw new QuiesceError(
      'bad-config',
      `${socketPath} exists and is not a socket; refusing to replace it. Choose another socket path.`,
    );
  }
  if (await socketAnswers(socketPath)) {
    throw new QuiesceError(
      'bad-config',
      `another process is already listening on ${socketPath}; stop it first or give this writer another socket path`,
    );
  }
  await unlink(socketPath);
}

/** Whether something accepts connections on the socket (a stale socket file refuses them). */
async function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect(socketPath);
    const done = (answer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(answer);
    };
    const timer = setTimeout(() => done(true), 1000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise<number>((resolvePromise, reject) => {
    server.bindAsync(address, credentials, (error, port) => {
      if (error) reject(error);
      else resolvePromise(port);
    });
  });
}

/**
 * Serve `endpoint` on the Unix socket `socketPath`: the parent directory is created with mode
 * 0700 if missing, a stale socket file is replaced, the socket is made 0600.
 *
 * @example
 * const server = await serveWriter(createWriterRuntime(definition), '/run/quiesce/writers/shop.sock');
 * process.once('SIGTERM', () => void server.close());
 */
export async function serveWriter(
  endpoint: WriterEndpoint,
  socketPath: string,
  options: ServeWriterOptions = {},
): Promise<WriterServer> {
  const path = resolve(socketPath);
  const address = `unix://${path}`;
  const core = buildEndpointServer(
    endpoint,
    loadWriterService(),
    Object.values(UNARY_METHODS) as UnaryMethod<unknown, unknown>[],
    options,
  );
  await prepareSocketPath(path);
  try {
    await bind(core.server, address, grpc.ServerCredentials.createInsecure());
    await chmod(path, 0o600);
  } catch (error) {
    core.server.forceShutdown();
    throw new QuiesceError(
      'bad-config',
      `cannot listen on ${path}: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
  }
  const socketInode = (await stat(path)).ino;

  let closing: Promise<void> | undefined;
  async function shutdown(): Promise<void> {
    await core.stop();
    try {
      // Only our own socket: a successor may already listen on the same path.
      if ((await stat(path)).ino === socketInode) await unlink(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') (options.onError ?? (() => undefined))(error);
    }
  }

  return {
    address,
    close: () => (closing ??= shutdown()),
  };
}

/**
 * Serve `endpoint` on a listening address with the given credentials (the agent's TCP with
 * mutual TLS). `methods` are the service's unary rpcs (WriterService's, and any more it has).
 */
export async function serveEndpointOn<R extends string, E extends WriterEndpoint>(
  endpoint: E,
  service: Record<R, WireMethod>,
  address: string,
  credentials: grpc.ServerCredentials,
  methods: UnaryMethod<unknown, unknown, E>[],
  options: ServeWriterOptions = {},
): Promise<WriterServer & { port: number }> {
  const core = buildEndpointServer(endpoint, service, methods, options);
  let port: number;
  try {
    port = await bind(core.server, address, credentials);
  } catch (error) {
    core.server.forceShutdown();
    throw new QuiesceError(
      'bad-config',
      `cannot listen on ${address}: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  let closing: Promise<void> | undefined;
  return { address, port, close: () => (closing ??= core.stop()) };
}

/** The gRPC server carrying `endpoint` (not yet bound), and how to stop it. */
function buildEndpointServer<R extends string, E extends WriterEndpoint>(
  endpoint: E,
  definition: Record<R, WireMethod>,
  methods: UnaryMethod<unknown, unknown, E>[],
  options: ServeWriterOptions,
): { server: grpc.Server; stop(): Promise<void> } {
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
  const onError = options.onError ?? (() => undefined);
  const service = tolerantService(definition);

  /** Open session streams: `stop` ends the stream (the writer is going away) and closes the session. */
  const sessions = new Set<{ stop(): Promise<void> }>();

  function unary<Req, Res>(method: UnaryMethod<Req, Res, E>): grpc.handleUnaryCall<unknown, object> {
    async function handle(call: grpc.ServerUnaryCall<unknown, object>, callback: grpc.sendUnaryData<object>) {
      const parsed = parseRequest(call.request, (wire) => method.requestFromWire(wire), method.requestSchema);
      if (!parsed.ok) {
        callback(invalidRequestStatus(method.rpc, method.phase, parsed.problem));
        return;
      }
      const controller = new AbortController();
      const onCancel = () => controller.abort(cancellationReason(call, method.rpc));
      call.once('cancelled', onCancel);
      let wire: object;
      try {
        const response = await method.invoke(endpoint, parsed.value, { signal: controller.signal });
        const checked = method.responseSchema.safeParse(response);
        if (!checked.success) {
          throw new QuiesceError(
            'protocol',
            `the writer's ${method.rpc} answer is invalid: ${describeZodError(checked.error)}`,
            {
              phase: method.phase,
            },
          );
        }
        wire = method.responseToWire(checked.data);
      } catch (error) {
        callback(failureStatus(error, method.phase));
        return;
      } finally {
        call.off('cancelled', onCancel);
      }
      callback(null, wire);
    }
    return (call, callback) => {
      handle(call, callback).catch(onError);
    };
  }

  async function openSession(call: grpc.ServerWritableStream<unknown, object>): Promise<void> {
    const parsed = parseRequest(call.request, (wire) => wire, SessionRequestSchema);
    if (!parsed.ok) {
      call.emit('error', invalidRequestStatus('OpenSession', null, parsed.problem));
      return;
    }
    const { setId } = parsed.value;
    let session: WriterSession;
    try {
      session = await endpoint.openSession({ setId });
    } catch (error) {
      if (!call.cancelled) call.emit('error', failureStatus(error, null));
      return;
    }

    const heartbeat: { timer?: NodeJS.Timeout } = {};
    let ended: Promise<void> | undefined;
    const entry = {
      stop: async () => {
        if (!call.cancelled && !call.writableEnded && !call.destroyed) call.end();
        await end();
      },
    };
    const end = (): Promise<void> => {
      ended ??= (async () => {
        clearInterval(heartbeat.timer);
        sessions.delete(entry);
        try {
          await session.close();
        } catch (error) {
          onError(error);
        }
      })();
      return ended;
    };
    if (call.cancelled) {
      await end();
      return;
    }
    sessions.add(entry);
    call.once('cancelled', () => {
      void end();
    });
    // A stream that closes without a cancel (the server ended it) ends the session too.
    call.once('close', () => {
      void end();
    });
    call.on('error', onError);

    const send = (kind: SessionEvent['kind']) => {
      if (call.cancelled || call.writableEnded || call.destroyed) return;
      const event: SessionEvent = { kind, setId, heartbeatIntervalMs, sentAtMs: Date.now() };
      call.write(event);
    };
    send('opened');
    heartbeat.timer = setInterval(() => send('heartbeat'), heartbeatIntervalMs);
  }

  const implementation: grpc.UntypedServiceImplementation = {
    OpenSession: (call: grpc.ServerWritableStream<unknown, object>) => {
      openSession(call).catch(onError);
    },
  };
  for (const method of methods) {
    implementation[method.rpc] = unary(method);
  }

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // Notice a dead requester within keepalive time + timeout, even on a connection that was
    // dropped rather than closed.
    'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? 2000,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs ?? 1000,
    'grpc.keepalive_permit_without_calls': 1,
    // Requesters ping every 10 s; servers that enforce a ping rate (C-core) must allow it.
    'grpc.http2.min_ping_interval_without_data_ms': 5000,
  });
  server.addService(service, implementation);

  async function stop(): Promise<void> {
    await Promise.all([...sessions].map((session) => session.stop()));
    await new Promise<void>((resolvePromise) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        resolvePromise();
      }, options.shutdownGraceMs ?? 2000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolvePromise();
      });
    });
  }
  return { server, stop };
}
