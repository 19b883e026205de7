import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { connectionLimits, peerOf } from './connection-limits.ts';
import { PendingConnections } from './pending-connections.ts';

describe('connection limits', () => {
  test('sized from the descriptor limit, always well below it', () => {
    for (const openFiles of [64, 256, 1024, 4096, 1_048_576, Infinity]) {
      const limits = connectionLimits(openFiles);
      assert.ok(limits.pendingPerPeer <= limits.pendingTotal);
      assert.ok(limits.pendingTotal <= 512 && limits.authenticated <= 256);
      if (openFiles >= 256) assert.ok(limits.pendingTotal + limits.authenticated <= openFiles / 2, String(openFiles));
    }
    assert.deepEqual(connectionLimits(1024), {
      handshakeTimeoutMs: 5000,
      idleTimeoutMs: 60_000,
      pendingPerPeer: 64,
      pendingTotal: 256,
      authenticated: 128,
    });
  });

  test('a peer is an IPv4 address (mapped too) or an IPv6 /64', () => {
    assert.equal(peerOf('10.0.0.5'), '10.0.0.5');
    assert.equal(peerOf('::ffff:10.0.0.5'), '10.0.0.5');
    assert.equal(peerOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(peerOf('2001:0db8:0001:0002:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
    assert.equal(peerOf('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(peerOf('::1'), '0:0:0:0::/64');
    assert.equal(peerOf('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(peerOf(undefined), undefined);
  });
});

/** `count` real TCP connections to a local server: the server's ends, in arrival order, and a cleanup. */
async function sockets(count: number): Promise<{ server: Socket[]; close: () => void }> {
  const accepted: Socket[] = [];
  const server = createServer((socket) => accepted.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const clients: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const client = connect(port, '127.0.0.1');
    clients.push(client);
    await new Promise((resolve) => client.once('connect', resolve));
    while (accepted.length <= i) await new Promise((resolve) => setImmediate(resolve));
  }
  return {
    server: accepted,
    close: () => {
      for (const socket of [...clients, ...accepted]) socket.destroy();
      server.close();
    },
  };
}

describe('pending connections', () => {
  const limits = { ...connectionLimits(1024), pendingPerPeer: 3, pendingTotal: 5 };

  test('past the per-peer limit the oldest silent one is closed, never the newcomer nor one that spoke', async () => {
    const { server, close } = await sockets(5);
    try {
      const pending = new PendingConnections(limits);
      const ids = server.slice(0, 3).map((socket) => pending.admit(socket, 'a'));
      pending.spoke(ids[0]!);
      pending.admit(server[3]!, 'a');
      assert.deepEqual(
        server.map((s) => s.destroyed),
        [false, true, false, false, false],
      );
      pending.admit(server[4]!, 'a');
      assert.deepEqual(
        server.map((s) => s.destroyed),
        [false, true, true, false, false],
      );
      assert.equal(pending.size, 3);
    } finally {
      close();
    }
  });

  test('past the total limit the oldest silent one of any peer is closed', async () => {
    const { server, close } = await sockets(6);
    try {
      const pending = new PendingConnections(limits);
      server.slice(0, 5).forEach((socket, i) => pending.admit(socket, `peer${i}`));
      pending.admit(server[5]!, 'peer5');
      assert.deepEqual(
        server.map((s) => s.destroyed),
        [true, false, false, false, false, false],
      );
      assert.equal(pending.size, 5);
    } finally {
      close();
    }
  });

  test('closed at the handshake timeout unless forgotten (authenticated) before', async () => {
    const { server, close } = await sockets(2);
    try {
      const pending = new PendingConnections({ ...limits, handshakeTimeoutMs: 100 });
      pending.admit(server[0]!, 'a');
      pending.forget(pending.admit(server[1]!, 'a'));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(
        server.map((s) => s.destroyed),
        [true, false],
      );
      assert.equal(pending.size, 0);
    } finally {
      close();
    }
  });
});
