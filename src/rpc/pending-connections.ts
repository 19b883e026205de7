// The agent's connections that have not authenticated yet, counted per peer and in all. Past a
// limit one of them is closed to make room, never the newcomer: first the oldest that has not
// sent a byte (a host's TLS client speaks at once), then the oldest of the others. So a
// stranger's idle connections, from any address (the host's own included), can never push a
// host's handshake out; and each one is closed at the handshake timeout anyway.
import type { Socket } from 'node:net';
import type { ConnectionLimits } from './connection-limits.ts';

interface Entry {
  socket: Socket;
  peer: string;
  timer: NodeJS.Timeout;
}

/** Two queues, oldest first: the silent connections and those that spoke. */
class Queues {
  readonly silent = new Set<string>();
  readonly spoke = new Set<string>();

  get size(): number {
    return this.silent.size + this.spoke.size;
  }

  /** The one to close first. */
  first(): string | undefined {
    return this.silent.values().next().value ?? this.spoke.values().next().value;
  }

  delete(id: string): void {
    this.silent.delete(id);
    this.spoke.delete(id);
  }
}

/** A TCP connection's identity while it is open: its peer's address and port. */
export const connectionId = (socket: { remoteAddress?: string; remotePort?: number }) =>
  `${socket.remoteAddress}|${socket.remotePort}`;

export class PendingConnections {
  private readonly entries = new Map<string, Entry>();
  private readonly all = new Queues();
  private readonly byPeer = new Map<string, Queues>();

  constructor(private readonly limits: ConnectionLimits) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * Counts `socket` against `peer`, first closing others past a limit; closes it at the
   * handshake timeout unless forgotten before. Answers its id.
   */
  admit(socket: Socket, peer: string): string {
    const id = connectionId(socket);
    if (this.entries.has(id)) this.evict(id);
    const ofPeer = () => this.byPeer.get(peer)?.first();
    while ((this.byPeer.get(peer)?.size ?? 0) >= this.limits.pendingPerPeer) this.evict(ofPeer()!);
    while (this.all.size >= this.limits.pendingTotal) this.evict(this.all.first()!);
    let mine = this.byPeer.get(peer);
    if (mine === undefined) this.byPeer.set(peer, (mine = new Queues()));
    mine.silent.add(id);
    this.all.silent.add(id);
    const timer = setTimeout(() => socket.destroy(), this.limits.handshakeTimeoutMs);
    this.entries.set(id, { socket, peer, timer });
    socket.once('close', () => {
      if (this.entries.get(id)?.socket === socket) this.forget(id);
    });
    return id;
  }

  /** The connection sent its first bytes: it moves behind every silent one for eviction. */
  spoke(id: string): void {
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    for (const queues of [this.all, this.byPeer.get(entry.peer)]) {
      if (queues?.silent.delete(id)) queues.spoke.add(id);
    }
  }

  /** The connection authenticated (or closed): it no longer counts, and no timer closes it. */
  forget(id: string): void {
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.entries.delete(id);
    this.all.delete(id);
    const mine = this.byPeer.get(entry.peer);
    mine?.delete(id);
    if (mine?.size === 0) this.byPeer.delete(entry.peer);
  }

  destroyAll(): void {
    for (const { socket } of [...this.entries.values()]) socket.destroy();
  }

  private evict(id: string): void {
    const socket = this.entries.get(id)?.socket;
    // Forget it now: its 'close' comes later, and the limit must hold at once.
    this.forget(id);
    socket?.destroy();
  }
}
