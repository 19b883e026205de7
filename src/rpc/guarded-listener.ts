/**
 * The agent's listening socket, in front of gRPC: it accepts TCP, makes the mutual-TLS handshake
 * itself, and hands gRPC only connections authenticated with a pinned host certificate. A
 * connection that has not authenticated within the handshake timeout is closed, whether silent
 * or trickling bytes; unauthenticated connections are limited per peer and in all
 * (pending-connections.ts says which one makes room); authenticated ones are limited in all,
 * and gRPC closes those that carry no call for the idle timeout.
 */
import { createServer, type Server } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { QuiesceError } from '../model/index.ts';
import { messageOf } from '../util/index.ts';
import type { TlsIdentity } from './agent-wire.ts';
import { peerOf, type ConnectionLimits } from './connection-limits.ts';
import { connectionId, PendingConnections } from './pending-connections.ts';

export interface GuardedListener {
  readonly port: number;
  /** Stops accepting and closes every connection not yet handed over. */
  stopAccepting(): void;
  /** Closes the connections handed over too (after gRPC had its chance to end them cleanly). */
  destroyAll(): void;
}

export interface GuardOptions {
  identity: TlsIdentity;
  /** The host certificates to pin. */
  trusted: Buffer[];
  limits: ConnectionLimits;
  /** Receives each authenticated connection (ALPN h2). */
  onAuthenticated(socket: TLSSocket): void;
}

/** `host:port` (`[v6]:port` too) as net.listen takes them. */
function listenArguments(address: string): { host: string | undefined; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address);
  if (!match) throw new QuiesceError('bad-config', `"${address}" is not an address to listen on; write host:port`);
  const host = match[1] ?? match[2];
  return { host: host === '' ? undefined : host, port: Number(match[3]) };
}

function listen(server: Server, address: string): Promise<number> {
  const { host, port } = listenArguments(address);
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      const bound = server.address();
      resolvePromise(typeof bound === 'object' && bound !== null ? bound.port : port);
    });
  });
}

/** Listens on `address` (`host:port`); see the file comment. */
export async function listenGuarded(address: string, options: GuardOptions): Promise<GuardedListener> {
  const { limits } = options;
  const pending = new PendingConnections(limits);
  const handedOver = new Set<TLSSocket>();
  const tls = createTlsServer({
    key: options.identity.key,
    cert: options.identity.cert,
    ca: options.trusted,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2'],
    handshakeTimeout: limits.handshakeTimeoutMs,
  });
  // A failed handshake is the stranger's problem; the socket is already destroyed.
  tls.on('tlsClientError', () => undefined);
  tls.on('secureConnection', (socket: TLSSocket) => {
    pending.forget(connectionId(socket));
    socket.on('error', () => undefined);
    if (handedOver.size >= limits.authenticated || socket.alpnProtocol !== 'h2') {
      socket.destroy();
      return;
    }
    handedOver.add(socket);
    socket.once('close', () => handedOver.delete(socket));
    options.onAuthenticated(socket);
  });
  const front = createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    const peer = peerOf(socket.remoteAddress);
    if (peer === undefined) {
      socket.destroy();
      return;
    }
    const id = pending.admit(socket, peer);
    // No TLS for a connection that says nothing: it costs one descriptor until it is closed.
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      pending.spoke(id);
      tls.emit('connection', socket);
    });
  });
  // Out of descriptors after all (the writers' files): libuv drops the connection; keep serving.
  front.on('error', () => undefined);
  let port: number;
  try {
    port = await listen(front, address);
  } catch (error) {
    throw new QuiesceError('bad-config', `cannot listen on ${address}: ${messageOf(error)}`, { cause: error });
  }
  return {
    port,
    stopAccepting: () => {
      front.close();
      pending.destroyAll();
    },
    destroyAll: () => {
      pending.destroyAll();
      for (const socket of handedOver) socket.destroy();
    },
  };
}
