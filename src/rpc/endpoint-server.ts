// The gRPC server that carries one endpoint, not yet bound: every request validated before it
// reaches the endpoint, every answer before it leaves, failures as failure-status.ts describes.
import * as grpc from '@grpc/grpc-js';
import { QuiesceError, type WriterEndpoint } from '../model/index.ts';
import { describeZodError, type UnaryMethod } from './convert.ts';
import { failureStatus, invalidRequestStatus } from './failure-status.ts';
import { parseRequest, tolerantService } from './request-decode.ts';
import { serveSession, type HeldSession, type SessionHost } from './server-session.ts';
import { MAX_MESSAGE_BYTES, type WireMethod } from './writer-proto.ts';
import type { ServeWriterOptions } from './writer-server.ts';

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2000;

export interface EndpointServer {
  readonly server: grpc.Server;
  /** Ends every open session, lets calls in flight finish for the grace period, cuts the rest. */
  stop(): Promise<void>;
}

const DEADLINE_SLACK_MS = 250;

/** The gRPC server carrying `endpoint` (not yet bound), and how to stop it. */
export function buildEndpointServer<R extends string, E extends WriterEndpoint>(
  endpoint: E,
  definition: Record<R, WireMethod>,
  methods: UnaryMethod<unknown, unknown, E>[],
  options: ServeWriterOptions,
): EndpointServer {
  const onError = options.onError ?? (() => undefined);
  const host: SessionHost = {
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS,
    onError,
    sessions: new Set(),
  };
  const implementation: grpc.UntypedServiceImplementation = {
    OpenSession: (call: grpc.ServerWritableStream<unknown, object>) => {
      serveSession(endpoint, call, host).catch(onError);
    },
  };
  for (const method of methods) {
    implementation[method.rpc] = unaryHandler(endpoint, method, onError);
  }
  const server = createServer(options);
  server.addService(tolerantService(definition), implementation);
  return { server, stop: () => stopServer(server, host.sessions, options.shutdownGraceMs ?? 2000) };
}

function createServer(options: ServeWriterOptions): grpc.Server {
  return new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // Notice a dead requester within keepalive time + timeout, even on a connection that was
    // dropped rather than closed.
    'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? 2000,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs ?? 1000,
    'grpc.keepalive_permit_without_calls': 1,
    // Requesters ping every 10 s; servers that enforce a ping rate (C-core) must allow it.
    'grpc.http2.min_ping_interval_without_data_ms': 5000,
    ...(options.maxConnectionIdleMs === undefined
      ? {}
      : { 'grpc.max_connection_idle_ms': options.maxConnectionIdleMs }),
  });
}

async function stopServer(server: grpc.Server, sessions: Set<HeldSession>, graceMs: number): Promise<void> {
  await Promise.all([...sessions].map((session) => session.stop()));
  await new Promise<void>((resolvePromise) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolvePromise();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolvePromise();
    });
  });
}

type UnaryCall = grpc.ServerUnaryCall<unknown, object>;

function unaryHandler<Req, Res, E extends WriterEndpoint>(
  endpoint: E,
  method: UnaryMethod<Req, Res, E>,
  onError: (error: unknown) => void,
): grpc.handleUnaryCall<unknown, object> {
  return (call, callback) => {
    answerUnary(endpoint, method, call, callback).catch(onError);
  };
}

/** One unary call: validated, run with a signal that aborts when the requester cancels, answered. */
async function answerUnary<Req, Res, E extends WriterEndpoint>(
  endpoint: E,
  method: UnaryMethod<Req, Res, E>,
  call: UnaryCall,
  callback: grpc.sendUnaryData<object>,
): Promise<void> {
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
    wire = await checkedAnswer(endpoint, method, parsed.value, controller.signal);
  } catch (error) {
    callback(failureStatus(error, method.phase));
    return;
  } finally {
    call.off('cancelled', onCancel);
  }
  callback(null, wire);
}

/** The endpoint's answer, validated with the method's schema, as the wire object. */
async function checkedAnswer<Req, Res, E extends WriterEndpoint>(
  endpoint: E,
  method: UnaryMethod<Req, Res, E>,
  request: Req,
  signal: AbortSignal,
): Promise<object> {
  const response = await method.invoke(endpoint, request, { signal });
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
  return method.responseToWire(checked.data);
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
