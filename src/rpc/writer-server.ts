/**
 * Serve a WriterEndpoint over gRPC on a Unix socket. Every request is validated before it
 * reaches the endpoint, every answer before it leaves; failures travel as described in
 * failure-status.ts; a session stream that ends (cancel, disconnect, peer death) closes the
 * endpoint's session.
 */
import * as grpc from '@grpc/grpc-js';
import { chmod, stat, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { QuiesceError, type WriterEndpoint } from '../model/index.ts';
import { isErrno, messageOf } from '../util/index.ts';
import { UNARY_METHODS, type UnaryMethod } from './convert.ts';
import { buildEndpointServer } from './endpoint-server.ts';
import { prepareSocketPath } from './socket-file.ts';
import { loadWriterService } from './writer-proto.ts';

export interface ServeWriterOptions {
  /** How often a session stream carries a heartbeat. Default 2000 ms. */
  heartbeatIntervalMs?: number;
  /** HTTP/2 keepalive ping period towards each requester. Default 2000 ms. */
  keepaliveTimeMs?: number;
  /** How long a keepalive ping may go unanswered before the connection counts as dead. Default 1000 ms. */
  keepaliveTimeoutMs?: number;
  /** Closes a connection that carries no call (an open session is one) this long. Default: never. */
  maxConnectionIdleMs?: number;
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

export { DEFAULT_HEARTBEAT_INTERVAL_MS } from './endpoint-server.ts';

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
    throw new QuiesceError('bad-config', `cannot listen on ${path}: ${messageOf(error)}`, {
      cause: error,
    });
  }
  const socketInode = (await stat(path)).ino;

  let closing: Promise<void> | undefined;
  async function shutdown(): Promise<void> {
    await core.stop();
    try {
      // Only our own socket: a successor may already listen on the same path.
      if ((await stat(path)).ino === socketInode) await unlink(path);
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) (options.onError ?? (() => undefined))(error);
    }
  }

  return {
    address,
    close: () => (closing ??= shutdown()),
  };
}
