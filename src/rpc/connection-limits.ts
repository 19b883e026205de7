// How many connections the agent holds, and for how long: a stranger who opens connections and
// says nothing must run out of room before the agent runs out of file descriptors.

export interface ConnectionLimits {
  /** A connection not authenticated (TLS with a pinned host certificate) this long after it was accepted is closed. */
  handshakeTimeoutMs: number;
  /** An authenticated connection that carries no call this long is closed; a host's open session is a call. */
  idleTimeoutMs: number;
  /** Connections not yet authenticated from one peer (an IPv4 address, an IPv6 /64). */
  pendingPerPeer: number;
  /** Connections not yet authenticated, from everyone. */
  pendingTotal: number;
  /** Authenticated connections (pinned hosts), in all. */
  authenticated: number;
}

export const HANDSHAKE_TIMEOUT_MS = 5000;
export const IDLE_TIMEOUT_MS = 60_000;
const PENDING_PER_PEER = 64;

const clamp = (value: number, low: number, high: number) => Math.min(high, Math.max(low, Math.floor(value)));

/**
 * The limits for a process allowed `openFiles` descriptors: a quarter of them for handshakes
 * (64 a peer, 512 at most), an eighth for hosts (256 at most); the rest stays for the writers,
 * their files and the freeze.
 */
export function connectionLimits(openFiles: number): ConnectionLimits {
  const pendingTotal = clamp(openFiles / 4, 16, 512);
  return {
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
    pendingPerPeer: Math.min(PENDING_PER_PEER, pendingTotal),
    pendingTotal,
    authenticated: clamp(openFiles / 8, 8, 256),
  };
}

/**
 * Whom a connection counts against: its IPv4 address (also when IPv4-mapped), or the /64 of an
 * IPv6 address (one host gets a whole /64). Undefined when the socket has no address any more.
 */
export function peerOf(address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('%')[0]!.split('::');
  const front = head === '' ? [] : head.split(':');
  const back = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::')
    ? [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back]
    : front;
  return `${groups
    .slice(0, 4)
    .map((group) => (Number.parseInt(group, 16) || 0).toString(16))
    .join(':')}::/64`;
}
