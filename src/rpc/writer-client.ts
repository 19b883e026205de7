/**
 * A WriterEndpoint that is a gRPC client of a writer's Unix socket. Answers are validated
 * with the model's schemas; failures arrive as the writer's own QuiesceError, or as
 * `not-responding` / `protocol` when the writer cannot be reached or speaks nonsense.
 */
import * as grpc from '@grpc/grpc-js';
import { resolve } from 'node:path';
import type { CallOptions, SetRequest, WriterEndpoint } from '../model/index.ts';
import { closeChannel, invokeUnary, openChannel, type ClientChannel, type ClientService } from './client-channel.ts';
import { openRemoteSession, type RemoteWriterSession } from './client-session.ts';
import { UNARY_METHODS, type UnaryMethod } from './convert.ts';
import { loadWriterService } from './writer-proto.ts';

export type { RemoteWriterSession } from './client-session.ts';

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

export interface RemoteWriterEndpoint extends WriterEndpoint {
  /** `unix:///absolute/path.sock` */
  readonly address: string;
  openSession(request: SetRequest): Promise<RemoteWriterSession>;
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
  service: ClientService,
  options: ConnectWriterOptions = {},
  channelOptions: grpc.ChannelOptions = {},
): { endpoint: RemoteWriterEndpoint; invoke: InvokeMethod } {
  const channel = openChannel(address, credentials, service, options, channelOptions);
  const invoke: InvokeMethod = (method, request, callOptions) => invokeUnary(channel, method, request, callOptions);
  return { endpoint: endpointOver(channel, invoke), invoke };
}

/** The WriterEndpoint whose every method is one call on `channel`. */
function endpointOver(channel: ClientChannel, invoke: InvokeMethod): RemoteWriterEndpoint {
  const m = UNARY_METHODS;
  return {
    address: channel.address,
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
    openSession: (request) => openRemoteSession(channel, request),
    close: async () => closeChannel(channel),
  };
}
