// A stranger's connections to an agent, on loopback only: plain TCP that never says a word, or
// TLS with a certificate of its own. Each records when it connected and when the other end
// closed it; every socket is destroyed by close(), whatever state it is in.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface Probe {
  /** ms since the flood started, when the connection was made (null: never). */
  connectedAt: number | null;
  /** ms since the flood started, when the agent closed it (null: still open, or we closed it). */
  closedAt: number | null;
  /** Application bytes the agent sent (an accepted TLS peer gets HTTP/2 SETTINGS at once). */
  bytes: number;
  tlsDone: boolean;
}

export interface Flood {
  readonly probes: Probe[];
  readonly startedAt: number;
  /** Still open now: connected, not closed by the agent. */
  open(): number;
  close(): void;
}

export interface FloodOptions {
  port: number;
  count: number;
  /** Source addresses (127.x.y.z), round robin. */
  from: string[];
  /** With a TLS identity: a TLS client presenting it; without, silent TCP. */
  tls?: { key: Buffer; cert: Buffer };
  /** How many connect at once; default 200. */
  batch?: number;
  /** Give up on a connect after this long; default 5000 ms. */
  connectTimeoutMs?: number;
}

const LOOPBACK = /^127\.\d+\.\d+\.\d+$/;

/** Opens the connections in batches and resolves once each batch is connected or given up. */
export async function flood(options: FloodOptions): Promise<Flood> {
  if (!options.from.every((address) => LOOPBACK.test(address))) throw new Error('a flood stays on loopback');
  const startedAt = Date.now();
  const sockets: Socket[] = [];
  const probes: Probe[] = [];
  const batch = options.batch ?? 200;
  for (let first = 0; first < options.count; first += batch) {
    const waits: Promise<void>[] = [];
    for (let i = first; i < Math.min(options.count, first + batch); i++) {
      const probe: Probe = { connectedAt: null, closedAt: null, bytes: 0, tlsDone: false };
      probes.push(probe);
      const socket = open(options, options.from[i % options.from.length]!, probe, startedAt);
      sockets.push(socket);
      waits.push(settled(socket, probe, options.connectTimeoutMs ?? 5000));
    }
    await Promise.all(waits);
  }
  return {
    probes,
    startedAt,
    open: () => probes.filter((p) => p.connectedAt !== null && p.closedAt === null).length,
    close: () => {
      for (const socket of sockets) {
        socket.removeAllListeners('close');
        socket.destroy();
      }
    },
  };
}

function open(options: FloodOptions, from: string, probe: Probe, startedAt: number): Socket {
  const since = () => Date.now() - startedAt;
  const socket = connect({ host: '127.0.0.1', port: options.port, localAddress: from });
  socket.on('error', () => undefined);
  socket.once('connect', () => (probe.connectedAt = since()));
  socket.once('close', () => {
    if (probe.connectedAt !== null) probe.closedAt = since();
  });
  if (options.tls) {
    const tls = tlsConnect({
      socket,
      key: options.tls.key,
      cert: options.tls.cert,
      // Only the agent's side is under test: whatever certificate it shows, we go on.
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
    });
    tls.on('error', () => undefined);
    tls.once('secureConnect', () => (probe.tlsDone = true));
    tls.on('data', (chunk: Buffer) => (probe.bytes += chunk.length));
  } else {
    socket.on('data', (chunk: Buffer) => (probe.bytes += chunk.length));
  }
  return socket;
}

/** Resolves once `socket` is connected, closed or given up on (then destroyed, never counted). */
function settled(socket: Socket, probe: Probe, timeoutMs: number): Promise<void> {
  return new Promise((resolvePromise) => {
    const timer = setTimeout(() => {
      if (probe.connectedAt === null) socket.destroy();
      resolvePromise();
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolvePromise();
    };
    socket.once('connect', done);
    socket.once('close', done);
  });
}

/** Figures of a flood: how many connected, how many the agent closed, and how long they stayed open. */
export function floodFigures(probes: Probe[]): {
  connected: number;
  closedByAgent: number;
  stillOpen: number;
  closedWithin1s: number;
  longestOpenMs: number;
  tlsDone: number;
  bytes: number;
} {
  const connected = probes.filter((p) => p.connectedAt !== null);
  const closed = connected.filter((p) => p.closedAt !== null);
  const lifetimes = closed.map((p) => p.closedAt! - p.connectedAt!);
  return {
    connected: connected.length,
    closedByAgent: closed.length,
    stillOpen: connected.length - closed.length,
    closedWithin1s: lifetimes.filter((ms) => ms <= 1000).length,
    longestOpenMs: lifetimes.reduce((a, b) => Math.max(a, b), 0),
    tlsDone: probes.filter((p) => p.tlsDone).length,
    bytes: probes.reduce((sum, p) => sum + p.bytes, 0),
  };
}
