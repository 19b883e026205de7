// The qga writer against a scripted qemu-ga on a real Unix socket (no guest, nothing frozen on
// this machine): its option checks, and what each phase asks of the agent and makes of its answers.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createWriterRuntime } from '../sdk/index.ts';
import { createQgaWriter } from './qga-writer.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-qga-writer-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Request {
  execute: string;
  arguments?: { id?: number; mountpoints?: string[] };
}

/** A qemu-ga that keeps a frozen/thawed state: freeze freezes `freezes` file systems, thaw thaws `thaws` (default all). */
async function scriptedAgent(script: { freezes: number; thaws?: number; frozen?: boolean }) {
  const path = join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`);
  const received: Request[] = [];
  const sockets = new Set<Socket>();
  let frozen = script.frozen ?? false;
  const answer = (request: Request): string => {
    switch (request.execute) {
      case 'guest-sync-delimited':
        return `\xff{"return": ${request.arguments?.id}}`;
      case 'guest-ping':
        return '{"return": {}}';
      case 'guest-fsfreeze-status':
        return `{"return": "${frozen ? 'frozen' : 'thawed'}"}`;
      case 'guest-fsfreeze-freeze':
      case 'guest-fsfreeze-freeze-list':
        frozen = script.freezes > 0;
        return `{"return": ${script.freezes}}`;
      case 'guest-fsfreeze-thaw':
        frozen = false;
        return `{"return": ${script.thaws ?? script.freezes}}`;
      default:
        return '{"error": {"class": "CommandNotFound", "desc": "unknown"}}';
    }
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let pending = '';
    socket.on('data', (chunk: Buffer) => {
      pending += Buffer.from(chunk.filter((byte) => byte !== 0xff)).toString('latin1');
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const request = JSON.parse(pending.slice(0, end)) as Request;
        pending = pending.slice(end + 1);
        received.push(request);
        socket.write(Buffer.from(`${answer(request)}\n`, 'latin1'));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    commands: () => received.map((r) => r.execute).filter((c) => c !== 'guest-sync-delimited'),
    received,
    frozen: () => frozen,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const disks = ['/var/lib/vms/guest.qcow2'];
const setId = 'set-1';

async function toFrozen(runtime: ReturnType<typeof createWriterRuntime>): Promise<void> {
  await runtime.prepareBackup({ setId, backupType: 'full', components: [] });
  await runtime.prepareSnapshot({ setId });
  await runtime.freeze({ setId, thawDeadlineMs: 60_000 });
}

describe('qga writer', () => {
  test('refuses options no agent could serve, with bad-config', () => {
    const socket = '/run/qga.sock';
    for (const options of [
      { name: 'g', socket: 'relative.sock', disks },
      { name: 'g', socket, disks: [] },
      { name: 'g', socket, disks: ['relative.img'] },
      { name: 'g', socket, disks, mountpoints: [] },
      { name: 'g', socket, disks, mountpoints: ['srv'] },
      { name: 'g', socket, disks, timeoutMs: 0 },
    ]) {
      assert.throws(() => createQgaWriter(options), { code: 'bad-config' }, JSON.stringify(options));
    }
    const writer = createQgaWriter({ name: 'g', socket, disks });
    assert.equal(writer.level, 'filesystem');
  });

  test('freezes the mount points given, thaws, and says filesystem in the thaw answer', async () => {
    const agent = await scriptedAgent({ freezes: 2 });
    const runtime = createWriterRuntime(
      createQgaWriter({ name: 'g', socket: agent.path, disks, mountpoints: ['/', '/srv'], timeoutMs: 2_000 }),
    );
    try {
      await toFrozen(runtime);
      assert.equal(agent.frozen(), true);
      const thawed = await runtime.thaw({ setId });
      assert.equal(thawed.consistency, 'filesystem');
      assert.equal(agent.frozen(), false);
      assert.deepEqual(agent.received.find((r) => r.execute === 'guest-fsfreeze-freeze-list')?.arguments, {
        mountpoints: ['/', '/srv'],
      });
      assert.deepEqual(agent.commands(), [
        'guest-ping',
        'guest-fsfreeze-status',
        'guest-fsfreeze-freeze-list',
        'guest-fsfreeze-thaw',
        'guest-fsfreeze-status',
      ]);
      await runtime.shutdown({ setId });
    } finally {
      await runtime.close();
      await agent.close();
    }
  });

  test('refuses a guest frozen already, a freeze of nothing, and a thaw of fewer than it froze', async () => {
    const held = await scriptedAgent({ freezes: 1, frozen: true });
    const none = await scriptedAgent({ freezes: 0 });
    const fewer = await scriptedAgent({ freezes: 3, thaws: 2 });
    const writer = (socket: string) => createWriterRuntime(createQgaWriter({ name: 'g', socket, disks }));
    try {
      const onHeld = writer(held.path);
      await onHeld.prepareBackup({ setId, backupType: 'full', components: [] });
      await assert.rejects(onHeld.prepareSnapshot({ setId }), { code: 'retryable', message: /frozen already/ });
      await onHeld.abort({ setId });
      assert.equal(held.frozen(), true, "someone else's freeze is never thawed");

      const onNone = writer(none.path);
      await onNone.prepareBackup({ setId, backupType: 'full', components: [] });
      await onNone.prepareSnapshot({ setId });
      await assert.rejects(onNone.freeze({ setId, thawDeadlineMs: 60_000 }), {
        code: 'nonretryable',
        message: /froze no file system/,
      });

      const onFewer = writer(fewer.path);
      await toFrozen(onFewer);
      await assert.rejects(onFewer.thaw({ setId }), { code: 'retryable', message: /thawed 2 .* had frozen 3/ });
      for (const runtime of [onHeld, onNone, onFewer]) await runtime.close();
    } finally {
      await Promise.all([held.close(), none.close(), fewer.close()]);
    }
  });

  test('abort after a freeze thaws the guest when the agent says it is frozen', async () => {
    const agent = await scriptedAgent({ freezes: 1 });
    const runtime = createWriterRuntime(createQgaWriter({ name: 'g', socket: agent.path, disks }));
    try {
      await toFrozen(runtime);
      await runtime.abort({ setId });
      assert.equal(agent.frozen(), false);
      assert.equal(agent.commands().at(-2), 'guest-fsfreeze-thaw');
      await runtime.shutdown({ setId });
    } finally {
      await runtime.close();
      await agent.close();
    }
  });
});
