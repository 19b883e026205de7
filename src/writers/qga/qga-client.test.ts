// The qemu-ga protocol client against a scripted agent on a real Unix socket: syncing past stale
// output, answers split at every byte, error answers, garbage, oversize lines, a closed socket, a
// silent agent, cancellation, re-syncing after a lost answer, and the thaw queued behind a lost freeze.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../model/index.ts';
import { isErrorAnswer } from './qga-answers.ts';
import { QgaClient } from './qga-client.ts';
import { MAX_ANSWER_BYTES } from './qga-wire.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-qga-client-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Request {
  execute: string;
  arguments?: { id?: number; mountpoints?: string[] };
}

interface FakeAgent {
  path: string;
  /** Every command received, on every connection, in order. */
  received: string[];
  close(): Promise<void>;
}

type Handler = (request: Request, socket: Socket, connection: number) => void | Promise<void>;

const SYNC_REPLY = (request: Request): Buffer =>
  Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${request.arguments?.id}}\n`)]);

/** A scripted qemu-ga: parses request lines (dropping 0xFF bytes) and hands each to `handle`. */
async function fakeAgent(
  handle: Handler,
  onConnect?: (socket: Socket, connection: number) => void,
): Promise<FakeAgent> {
  const path = join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`);
  const received: string[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer((socket) => {
    const connection = connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onConnect?.(socket, connection);
    let pending = '';
    let chain: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      pending += Buffer.from(chunk.filter((byte) => byte !== 0xff)).toString('utf8');
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const request = JSON.parse(pending.slice(0, end)) as Request;
        pending = pending.slice(end + 1);
        received.push(request.execute);
        chain = chain.then(() => handle(request, socket, connection));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    received,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Answers like qemu-ga: sync with the sentinel, ping, status, freeze and thaw with fixed answers. */
function plainAgent(
  answers: Partial<Record<string, string>> = {},
): (request: Request, socket: Socket, connection: number) => void {
  return (request, socket) => {
    if (request.execute === 'guest-sync-delimited') socket.write(SYNC_REPLY(request));
    else socket.write(`${answers[request.execute] ?? defaultAnswer(request.execute)}\n`);
  };
}

function defaultAnswer(command: string): string {
  switch (command) {
    case 'guest-ping':
      return '{"return": {}}';
    case 'guest-fsfreeze-status':
      return '{"return": "thawed"}';
    default:
      return '{"return": 1}';
  }
}

function rejectsWith(code: string, pattern: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof QuiesceError, `a QuiesceError, not ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, pattern);
    return true;
  };
}

describe('qemu-ga client: syncing and framing', () => {
  test('discards stale output of an earlier client up to its own sync answer', async () => {
    const agent = await fakeAgent(
      (request, socket) => {
        if (request.execute === 'guest-sync-delimited') {
          // An earlier client's sync answer (another id) and answers, then ours.
          socket.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 4242}\n{"return": "frozen"}\n')]));
          socket.write(SYNC_REPLY(request));
        } else {
          plainAgent()(request, socket, 0);
        }
      },
      // Stale answers and half a line, left in the channel before this client came.
      (socket) => socket.write('{"return": 7}\n{"error": {"class": "GenericError", "desc": "stale"}}\n{"retu'),
    );
    try {
      const client = await QgaClient.connect(agent.path, { timeoutMs: 2_000 });
      assert.equal(await client.status(), 'thawed');
      await client.ping();
      assert.equal(await client.freeze(['/srv']), 1);
      await client.close();
      assert.deepEqual(agent.received, [
        'guest-sync-delimited',
        'guest-fsfreeze-status',
        'guest-ping',
        'guest-fsfreeze-freeze-list',
      ]);
    } finally {
      await agent.close();
    }
  });

  test('reads answers split at every byte boundary', async () => {
    for (let split = 1; split < 40; split++) {
      const agent = await fakeAgent(async (request, socket) => {
        if (request.execute !== 'guest-sync-delimited') return;
        // The sync answer and the status answer, in two writes cut at `split`.
        const whole = Buffer.concat([SYNC_REPLY(request), Buffer.from('{"return": "frozen"}\n')]);
        const cut = Math.min(split, whole.length - 1);
        socket.write(whole.subarray(0, cut));
        await sleep(5);
        socket.write(whole.subarray(cut));
      });
      try {
        const client = await QgaClient.connect(agent.path, { timeoutMs: 2_000 });
        // The status answer is already in the stream: commands match answers by order.
        assert.equal(await client.status(), 'frozen', `split at ${split}`);
        await client.close();
      } finally {
        await agent.close();
      }
    }
  });

  test('sends mountpoints with guest-fsfreeze-freeze-list, and guest-fsfreeze-freeze without', async () => {
    const seen: Request[] = [];
    const agent = await fakeAgent((request, socket) => {
      seen.push(request);
      plainAgent({ 'guest-fsfreeze-freeze': '{"return": 3}', 'guest-fsfreeze-freeze-list': '{"return": 2}' })(
        request,
        socket,
        0,
      );
    });
    try {
      const client = await QgaClient.connect(agent.path);
      assert.equal(await client.freeze(['/', '/srv']), 2);
      assert.equal(await client.freeze(undefined), 3);
      await client.close();
      assert.deepEqual(seen.slice(1), [
        { execute: 'guest-fsfreeze-freeze-list', arguments: { mountpoints: ['/', '/srv'] } },
        { execute: 'guest-fsfreeze-freeze' },
      ]);
    } finally {
      await agent.close();
    }
  });
});

describe('qemu-ga client: error answers and garbage', () => {
  test('turns error answers into QuiesceErrors that say what to do', async () => {
    const agent = await fakeAgent(
      plainAgent({
        'guest-fsfreeze-freeze-list':
          '{"error": {"class": "CommandNotFound", "desc": "Command guest-fsfreeze-freeze-list has been disabled: the agent is in frozen state"}}',
        'guest-fsfreeze-freeze':
          '{"error": {"class": "GenericError", "desc": "failed to freeze /: Operation not permitted"}}',
        'guest-fsfreeze-thaw':
          '{"error": {"class": "CommandNotFound", "desc": "The command guest-fsfreeze-thaw has not been found"}}',
      }),
    );
    try {
      const client = await QgaClient.connect(agent.path);
      await assert.rejects(client.freeze(['/srv']), rejectsWith('retryable', /frozen by another client/));
      await assert.rejects(
        client.freeze(undefined),
        rejectsWith('nonretryable', /could not freeze .*Operation not permitted.*thawed whatever it had frozen/),
      );
      await assert.rejects(
        client.thaw(),
        (error) =>
          isErrorAnswer(error) &&
          rejectsWith('nonretryable', /does not know guest-fsfreeze-thaw.*Upgrade qemu-ga/)(error),
      );
      // The connection stays usable after an error answer.
      assert.equal(await client.status(), 'thawed');
      await client.close();
    } finally {
      await agent.close();
    }
  });

  test('refuses garbage: not JSON, not an answer, the wrong type', async () => {
    for (const [answer, pattern] of [
      ['this is not json', /not JSON/],
      ['{"hello": 1}', /neither \{"return":…\} nor \{"error":…\}/],
      ['{"return": "melted"}', /not what guest-fsfreeze-status returns/],
      // JSON.parse reads it; quoting it with JSON.stringify used to overflow the stack (a RangeError).
      [
        `{"return": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
        /answer \(a value nested too deep to quote\) is not what/,
      ],
    ] as const) {
      const agent = await fakeAgent(plainAgent({ 'guest-fsfreeze-status': answer }));
      try {
        const client = await QgaClient.connect(agent.path);
        await assert.rejects(
          client.status(),
          rejectsWith(
            'nonretryable',
            new RegExp(`garbage for guest-fsfreeze-status: .*${pattern.source}.*${agent.path}`),
          ),
        );
        await client.close();
      } finally {
        await agent.close();
      }
    }
  });

  test(`refuses an answer line over ${MAX_ANSWER_BYTES} bytes`, async () => {
    const agent = await fakeAgent((request, socket) => {
      if (request.execute === 'guest-sync-delimited') socket.write(SYNC_REPLY(request));
      else socket.write(`{"return": "${'x'.repeat(MAX_ANSWER_BYTES + 10)}`);
    });
    try {
      const client = await QgaClient.connect(agent.path, { timeoutMs: 5_000 });
      await assert.rejects(client.ping(), rejectsWith('nonretryable', /over 1048576 bytes/));
      await assert.rejects(
        client.status(),
        rejectsWith('nonretryable', /over 1048576 bytes/),
        'the connection is unusable after that',
      );
      await client.close();
    } finally {
      await agent.close();
    }
  });
});

describe('qemu-ga client: closed and missing sockets, silence', () => {
  test('a socket closed by the agent, a missing socket, a stale socket and a file are named with what to do', async () => {
    const agent = await fakeAgent((request, socket) => {
      if (request.execute === 'guest-sync-delimited') socket.write(SYNC_REPLY(request));
      else socket.destroy();
    });
    try {
      const client = await QgaClient.connect(agent.path);
      await assert.rejects(
        client.freeze(['/srv']),
        rejectsWith(
          'not-responding',
          new RegExp(`closed the connection; is qemu-ga running and listening on ${agent.path}\\?`),
        ),
      );
      await client.close();
    } finally {
      await agent.close();
    }
    const missing = join(dir, 'missing.sock');
    await assert.rejects(
      QgaClient.connect(missing),
      rejectsWith(
        'not-responding',
        new RegExp(`no socket at ${missing}: is qemu-ga running and listening on ${missing}\\?`),
      ),
    );
    // A socket file nobody listens on any more: its agent was killed.
    const stale = join(dir, 'stale.sock');
    const child = spawn(
      process.execPath,
      ['-e', `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => console.log('ready'))`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((resolve) => child.stdout.once('data', resolve));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await assert.rejects(
      QgaClient.connect(stale),
      rejectsWith(
        'not-responding',
        new RegExp(`nothing listens on ${stale} .*is qemu-ga running and listening on ${stale}\\?`),
      ),
    );
    const file = join(dir, 'plain-file');
    await writeFile(file, 'not a socket');
    await assert.rejects(
      QgaClient.connect(file),
      (error) => error instanceof QuiesceError && error.message.includes(file),
    );
  });

  test('a silent agent is not-responding within the timeout; a cancelled call says so', async () => {
    const silent = await fakeAgent(() => undefined);
    try {
      const t0 = performance.now();
      await assert.rejects(
        QgaClient.connect(silent.path, { timeoutMs: 300 }),
        rejectsWith(
          'not-responding',
          new RegExp(
            `guest-sync-delimited .*no answer within 300 ms: is qemu-ga running and listening on ${silent.path}\\?`,
          ),
        ),
      );
      assert.ok(performance.now() - t0 < 2_000, 'gave up in time');
    } finally {
      await silent.close();
    }
    const slow = await fakeAgent(async (request, socket) => {
      if (request.execute === 'guest-sync-delimited') socket.write(SYNC_REPLY(request));
      // guest-ping is never answered.
    });
    try {
      const client = await QgaClient.connect(slow.path);
      const controller = new AbortController();
      setTimeout(() => controller.abort(new QuiesceError('retryable', 'set s1 was aborted')), 50);
      await assert.rejects(
        client.ping({ signal: controller.signal }),
        rejectsWith('retryable', /guest-ping to qemu-ga .* was cancelled: set s1 was aborted/),
      );
      assert.equal(client.answerLost, true);
      // Cancelled before it goes out: not sent at all.
      await assert.rejects(
        client.freeze(['/srv'], { signal: AbortSignal.abort(new QuiesceError('retryable', 'set s2 was aborted')) }),
        rejectsWith('retryable', /cancelled: set s2/),
      );
      assert.ok(!slow.received.includes('guest-fsfreeze-freeze-list'), 'a cancelled freeze is never sent');
      await client.close();
    } finally {
      await slow.close();
    }
  });
});

describe('qemu-ga client: lost answers', () => {
  test('re-syncs after a lost answer, so a late answer is never taken for the next command', async () => {
    const agent = await fakeAgent(async (request, socket) => {
      if (request.execute === 'guest-sync-delimited') {
        socket.write(SYNC_REPLY(request));
      } else if (request.execute === 'guest-fsfreeze-freeze-list') {
        await sleep(300); // answered after the client gave up
        socket.write('{"return": 1}\n');
      } else {
        plainAgent()(request, socket, 0);
      }
    });
    try {
      const client = await QgaClient.connect(agent.path, { timeoutMs: 100 });
      await assert.rejects(client.freeze(['/srv']), rejectsWith('not-responding', /no answer within 100 ms/));
      assert.equal(client.answerLost, true, 'the freeze went out and its answer is lost');
      // The late `{"return": 1}` must not be read as the status: the client syncs first.
      assert.equal(await client.status({ timeoutMs: 2_000 }), 'thawed');
      assert.equal(client.answerLost, false);
      await client.close();
      assert.deepEqual(agent.received, [
        'guest-sync-delimited',
        'guest-fsfreeze-freeze-list',
        'guest-sync-delimited',
        'guest-fsfreeze-status',
      ]);
    } finally {
      await agent.close();
    }
  });

  test('a thaw queued behind a lost freeze reaches the agent after the client closed', async () => {
    let release!: () => void;
    const hung = new Promise<void>((resolve) => (release = resolve));
    const agent = await fakeAgent(async (request, socket) => {
      if (request.execute === 'guest-sync-delimited') socket.write(SYNC_REPLY(request));
      else if (request.execute === 'guest-fsfreeze-freeze-list')
        await hung; // a hung agent
      else plainAgent()(request, socket, 0);
    });
    try {
      const client = await QgaClient.connect(agent.path, { timeoutMs: 100 });
      await assert.rejects(client.freeze(['/srv']), rejectsWith('not-responding', /no answer/));
      assert.equal(client.queueThaw(), true);
      await client.close();
      assert.equal(client.queueThaw(), false, 'nothing can be queued on a closed connection');
      release();
      for (let i = 0; i < 100 && !agent.received.includes('guest-fsfreeze-thaw'); i++) await sleep(10);
      assert.deepEqual(agent.received, ['guest-sync-delimited', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']);
    } finally {
      await agent.close();
    }
  });
});
