/**
 * A WriterEndpoint that is a gRPC client of a writer's Unix socket. Answers are validated
 * with the model's schemas; failures arrive as the writer's own QuiesceError, or as
 * `not-responding` / `protocol` when the writer cannot be reached or speaks nonsense.
 */
import * as grpc from '@grpc/grpc-js';
import { resolve } from 'node:path';
import {
  QuiesceError,
  type CallOptions,
  type Phase,
  type SetRequest,
  type WriterEndpoint,
  type WriterSession,
} from '../model/index.ts';
import { SessionEventSchema, UNARY_METHODS, describeZodError, type UnaryMethod } from './convert.ts';
import { clientFailure, type ClientErrorContext } from './failure-status.ts';
import { MAX_MESSAGE_BYTES, loadWriterService, type AgentRpc, type WireMethod } from './writer-proto.ts';

export interface ConnectWriterOptions {
  /**
   * The gRPC deadline of every unary call, and how long `openSession` waits for the writer
   * to confirm the session. Without it calls have no deadline (pass a signal instead) and
   * `openSession` waits 30 s.
   */
  callTimeoutMs?: number;
  /** HTTP/2 keepalive ping period towards the writer. Default 10 000 ms (timeout: half of it). */
  keepaliveTimeMs?: number;
}

/** A session held over the wire. */
export interface RemoteWriterSession extends WriterSession {
  readonly setId: string;
  /**
   * Aborted, with a QuiesceError (`not-responding` when the writer vanished), when the writer's
   * side of the session is gone: the stream ended or failed, or no heartbeat came for three
   * heartbeat periods. Not aborted by `close()`.
   */
  readonly lost: AbortSignal;
}

export interface RemoteWriterEndpoint extends WriterEndpoint {
  /** `unix:///absolute/path.sock` */
  readonly address: string;
  openSession(request: SetRequest): Promise<RemoteWriterSession>;
}

const DEFAULT_SESSION_OPEN_TIMEOUT_MS = 30_000;
/** A session counts as lost after this many heartbeat periods of silence. */
const MISSED_HEARTBEATS = 3;

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error
    ? reason
    : new QuiesceError('nonretryable', `call aborted: ${String(reason)}`, { cause: reason });
}

/**
 * Connect to the writer serving on `socketPath` (a path, or a `unix://` address). The
 * connection is made lazily on the first call and re-made after the writer restarts.
 *
 * A call whose `signal` aborts is cancelled on the wire (the writer's handler sees its own
 * signal abort) and rejects with `signal.reason`, as `fetch` does.
 *
 * @example
 * const writer = connectWriter('/run/quiesce/writers/shop.sock', { callTimeoutMs: 10_000 });
 * const metadata = await writer.identify();
 * const session = await writer.openSession({ setId });
 * try { await writer.freeze({ setId, thawDeadlineMs: 60_000 }, { signal }); } finally { await session.close(); }
 */
export function connectWriter(socketPath: string, options: ConnectWriterOptions = {}): RemoteWriterEndpoint {
  const address = socketPath.startsWith('unix:') ? socketPath : `unix://${resolve(socketPath)}`;
  return connectOver(address, grpc.credentials.createInsecure(), loadWriterService(), options).endpoint;
}

/** A unary call of any method the service has (Report of AgentService, say). */
export type InvokeMethod = <Req, Res>(
  method: UnaryMethod<Req, Res, never>,
  request: Req,
  callOptions?: CallOptions,
) => Promise<Res>;

/**
 * A WriterEndpoint over any channel: the service definition (WriterService or AgentService),
 * credentials (insecure on a Unix socket, mutual TLS on TCP) and extra channel options.
 */
export function connectOver(
  address: string,
  credentials: grpc.ChannelCredentials,
  service: Record<Exclude<AgentRpc, 'Report'>, WireMethod> & Partial<Record<'Report', WireMethod>>,
  options: ConnectWriterOptions = {},
  channelOptions: grpc.ChannelOptions = {},
): { endpoint: RemoteWriterEndpoint; invoke: InvokeMethod } {
  const { callTimeoutMs } = options;
  const keepaliveTimeMs = options.keepaliveTimeMs ?? 10_000;
  const client = new grpc.Client(address, credentials, {
    ...channelOptions,
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': Math.max(1000, Math.floor(keepaliveTimeMs / 2)),
    'grpc.keepalive_permit_without_calls': 1,
    // A local writer that restarts should be reachable again within a second.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.use_local_subchannel_pool': 1,
  });
  const active = new Set<{ cancel(): void }>();
  let closed = false;

  function closedError(rpc: string, phase: Phase | null): QuiesceError {
    return new QuiesceError(
      'nonretryable',
      `the connection to writer at ${address} is closed; ${rpc} was not sent or not answered`,
      {
        phase,
      },
    );
  }

  async function invoke<Req, Res>(
    method: UnaryMethod<Req, Res, never>,
    request: Req,
    callOptions: CallOptions = {},
  ): Promise<Res> {
    const { signal } = callOptions;
    if (closed) throw closedError(method.rpc, method.phase);
    if (signal?.aborted) throw abortReason(signal);
    const definition = service[method.rpc];
    if (!definition)
      throw new QuiesceError('protocol', `the service at ${address} has no rpc ${method.rpc}`, { phase: method.phase });
    const context: ClientErrorContext = { target: address, rpc: method.rpc, phase: method.phase, callTimeoutMs };
    const raw = await new Promise<unknown>((resolvePromise, reject) => {
      const grpcOptions: grpc.CallOptions = callTimeoutMs === undefined ? {} : { deadline: Date.now() + callTimeoutMs };
      const onAbort = () => call.cancel();
      const call = client.makeUnaryRequest(
        definition.path,
        definition.requestSerialize,
        definition.responseDeserialize,
        method.requestToWire(request),
        new grpc.Metadata(),
        grpcOptions,
        (error, value) => {
          active.delete(call);
          signal?.removeEventListener('abort', onAbort);
          if (signal?.aborted) reject(abortReason(signal));
          else if (error && closed) reject(closedError(method.rpc, method.phase));
          else if (error) reject(clientFailure(error, context));
          else resolvePromise(value);
        },
      );
      active.add(call);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    const parsed = method.responseSchema.safeParse(method.responseFromWire(raw));
    if (!parsed.success) {
      throw new QuiesceError(
        'protocol',
        `writer at ${address} answered ${method.rpc} with an invalid message: ${describeZodError(parsed.error)}`,
        { phase: method.phase },
      );
    }
    return parsed.data;
  }

  async function openSession(request: SetRequest): Promise<RemoteWriterSession> {
    const { setId } = request;
    if (closed) throw closedError('OpenSession', null);
    const definition = service.OpenSession;
    const context: ClientErrorContext = { target: address, rpc: 'OpenSession', phase: null, callTimeoutMs };
    const openTimeoutMs = callTimeoutMs ?? DEFAULT_SESSION_OPEN_TIMEOUT_MS;
    const lost = new AbortController();

    return new Promise<RemoteWriterSession>((resolvePromise, reject) => {
      let state: 'opening' | 'open' | 'ended' = 'opening';
      let lastHeard = Date.now();
      let watchdog: NodeJS.Timeout | undefined;
      const stream = client.makeServerStreamRequest(
        definition.path,
        definition.requestSerialize,
        definition.responseDeserialize,
        { setId },
        new grpc.Metadata(),
        {},
      );
      const stop = () => {
        state = 'ended';
        clearTimeout(openTimer);
        clearInterval(watchdog);
        active.delete(handle);
        stream.cancel();
      };
      // Closing the endpoint ends its sessions as if closed one by one (`lost` stays quiet).
      const handle = { cancel: stop };
      active.add(handle);
      const fail = (error: QuiesceError) => {
        if (state === 'ended') return;
        const wasOpening = state === 'opening';
        stop();
        if (wasOpening) reject(error);
        else lost.abort(error);
      };
      const openTimer = setTimeout(() => {
        fail(
          new QuiesceError(
            'not-responding',
            `writer at ${address} did not open a session for set ${setId} within ${openTimeoutMs} ms. Is the writer process running, or is it stuck?`,
          ),
        );
      }, openTimeoutMs);

      const session: RemoteWriterSession = {
        setId,
        lost: lost.signal,
        close: async () => {
          if (state !== 'ended') stop();
        },
      };

      stream.on('data', (raw: unknown) => {
        const parsed = SessionEventSchema.safeParse(raw);
        if (!parsed.success) {
          fail(
            new QuiesceError(
              'protocol',
              `writer at ${address} sent an invalid session event: ${describeZodError(parsed.error)}`,
            ),
          );
          return;
        }
        lastHeard = Date.now();
        const event = parsed.data;
        if (state !== 'opening' || event.kind !== 'opened') return;
        state = 'open';
        clearTimeout(openTimer);
        if (event.heartbeatIntervalMs > 0) {
          const period = event.heartbeatIntervalMs;
          watchdog = setInterval(() => {
            const silentMs = Date.now() - lastHeard;
            if (silentMs <= MISSED_HEARTBEATS * period) return;
            fail(
              new QuiesceError(
                'not-responding',
                `writer at ${address} sent no session heartbeat for set ${setId} in ${silentMs} ms (expected one every ${period} ms). Is the writer process running, or is it stuck?`,
              ),
            );
          }, period);
          watchdog.unref();
        }
        resolvePromise(session);
      });
      stream.on('error', (error: unknown) => fail(clientFailure(error, context)));
      stream.on('end', () => {
        fail(
          new QuiesceError(
            'not-responding',
            `writer at ${address} ended the session for set ${setId}; it is shutting down`,
          ),
        );
      });
    });
  }

  const m = UNARY_METHODS;
  const endpoint: RemoteWriterEndpoint = {
    address,
    identify: (callOptions) => invoke(m.identify, {}, callOptions),
    status: (callOptions) => invoke(m.status, {}, callOptions),
    prepareBackup: (request, callOptions) => invoke(m.prepareBackup, request, callOptions),
    prepareSnapshot: async (request, callOptions) => {
      await invoke(m.prepareSnapshot, request, callOptions);
    },
    freeze: async (request, callOptions) => {
      await invoke(m.freeze, request, callOptions);
    },
    thaw: (request, callOptions) => invoke(m.thaw, request, callOptions),
    postSnapshot: (request, callOptions) => invoke(m.postSnapshot, request, callOptions),
    backupComplete: async (request, callOptions) => {
      await invoke(m.backupComplete, request, callOptions);
    },
    abort: async (request, callOptions) => {
      await invoke(m.abort, request, callOptions);
    },
    shutdown: async (request, callOptions) => {
      await invoke(m.shutdown, request, callOptions);
    },
    preRestore: async (request, callOptions) => {
      await invoke(m.preRestore, request, callOptions);
    },
    postRestore: async (request, callOptions) => {
      await invoke(m.postRestore, request, callOptions);
    },
    openSession,
    close: async () => {
      if (closed) return;
      closed = true;
      for (const call of [...active]) call.cancel();
      active.clear();
      client.close();
    },
  };
  return { endpoint, invoke };
}
