// One gRPC channel to a writer or agent as its client sees it: unary calls validated on the way
// back, cancelled on the wire when their signal aborts, and cut when the channel closes.
import * as grpc from '@grpc/grpc-js';
import { QuiesceError, type CallOptions, type Phase } from '../model/index.ts';
import { describeZodError, type UnaryMethod } from './convert.ts';
import { clientFailure, type ClientErrorContext } from './failure-status.ts';
import { MAX_MESSAGE_BYTES, type AgentRpc, type WireMethod } from './writer-proto.ts';

/** A service definition the client can call: every WriterService rpc, and Report if it is AgentService. */
export type ClientService = Record<Exclude<AgentRpc, 'Report'>, WireMethod> & Partial<Record<'Report', WireMethod>>;

export interface ClientChannel {
  /** The writer's address, for messages: `unix:///run/quiesce/writers/shop.sock`. */
  readonly address: string;
  readonly client: grpc.Client;
  readonly service: ClientService;
  /** The gRPC deadline of every unary call; none when undefined. */
  readonly callTimeoutMs: number | undefined;
  /** Calls and sessions in flight: closing the channel cancels them. */
  readonly active: Set<{ cancel(): void }>;
  closed: boolean;
}

/** The options of every client channel, over the caller's own (TLS names, say). */
function channelOptionsFor(keepaliveTimeMs: number, extra: grpc.ChannelOptions): grpc.ChannelOptions {
  return {
    ...extra,
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': Math.max(1000, Math.floor(keepaliveTimeMs / 2)),
    'grpc.keepalive_permit_without_calls': 1,
    // A local writer that restarts should be reachable again within a second.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.use_local_subchannel_pool': 1,
  };
}

export function openChannel(
  address: string,
  credentials: grpc.ChannelCredentials,
  service: ClientService,
  options: { callTimeoutMs?: number; keepaliveTimeMs?: number },
  extra: grpc.ChannelOptions,
): ClientChannel {
  const client = new grpc.Client(address, credentials, channelOptionsFor(options.keepaliveTimeMs ?? 10_000, extra));
  return { address, client, service, callTimeoutMs: options.callTimeoutMs, active: new Set(), closed: false };
}

/** Cancels everything in flight and closes the channel. Idempotent. */
export function closeChannel(channel: ClientChannel): void {
  if (channel.closed) return;
  channel.closed = true;
  for (const call of [...channel.active]) call.cancel();
  channel.active.clear();
  channel.client.close();
}

export function closedError(channel: ClientChannel, rpc: string, phase: Phase | null): QuiesceError {
  return new QuiesceError(
    'nonretryable',
    `the connection to writer at ${channel.address} is closed; ${rpc} was not sent or not answered`,
    { phase },
  );
}

/** What a call rejects with when its signal aborts: the signal's reason, as `fetch` does. */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error
    ? reason
    : new QuiesceError('nonretryable', `call aborted: ${String(reason)}`, { cause: reason });
}

/** One unary call: sent, awaited, and its answer validated with the method's schema. */
export async function invokeUnary<Req, Res>(
  channel: ClientChannel,
  method: UnaryMethod<Req, Res, never>,
  request: Req,
  callOptions: CallOptions = {},
): Promise<Res> {
  const { signal } = callOptions;
  if (channel.closed) throw closedError(channel, method.rpc, method.phase);
  if (signal?.aborted) throw abortReason(signal);
  const definition = channel.service[method.rpc];
  if (!definition) {
    throw new QuiesceError('protocol', `the service at ${channel.address} has no rpc ${method.rpc}`, {
      phase: method.phase,
    });
  }
  const raw = await sendUnary(channel, definition, method, request, signal);
  const parsed = method.responseSchema.safeParse(method.responseFromWire(raw));
  if (!parsed.success) {
    throw new QuiesceError(
      'protocol',
      `writer at ${channel.address} answered ${method.rpc} with an invalid message: ${describeZodError(parsed.error)}`,
      { phase: method.phase },
    );
  }
  return parsed.data;
}

/** The decoded answer of one call, or the QuiesceError (or abort reason) it failed with. */
function sendUnary<Req>(
  channel: ClientChannel,
  definition: WireMethod,
  method: UnaryMethod<Req, unknown, never>,
  request: Req,
  signal: AbortSignal | undefined,
): Promise<unknown> {
  const { address, callTimeoutMs } = channel;
  const context: ClientErrorContext = { target: address, rpc: method.rpc, phase: method.phase, callTimeoutMs };
  return new Promise<unknown>((resolvePromise, reject) => {
    const grpcOptions: grpc.CallOptions = callTimeoutMs === undefined ? {} : { deadline: Date.now() + callTimeoutMs };
    const onAbort = () => call.cancel();
    const call = channel.client.makeUnaryRequest(
      definition.path,
      definition.requestSerialize,
      definition.responseDeserialize,
      method.requestToWire(request),
      new grpc.Metadata(),
      grpcOptions,
      (error, value) => {
        channel.active.delete(call);
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) reject(abortReason(signal));
        else if (error && channel.closed) reject(closedError(channel, method.rpc, method.phase));
        else if (error) reject(clientFailure(error, context));
        else resolvePromise(value);
      },
    );
    channel.active.add(call);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
