// A stranger's connections cannot lower a guest's level. A real `quiesce agent` process, held to
// 1,024 file descriptors (soft and hard: it cannot raise them), serves a SQLite writer on
// loopback; the test floods it with 2,000 idle TCP connections (from the host's own address,
// then from 40 other addresses) and 200 TLS connections with a certificate it does not pin,
// and after each the host's set still takes the guest application-consistent. Then, in this
// process, an agent with a short idle timeout: an authenticated connection that carries no call
// is closed, and a host's session held open with no call for longer is not cut.
import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { stringify } from 'yaml';
import { startAgent } from '../src/agent/index.ts';
import { runSnapshotSet, type SetWriter } from '../src/coordinator/index.ts';
import type { SetReport } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { connectAgent, loadIdentity, makeIdentity, type IdentityFiles, type TlsIdentity } from '../src/rpc/index.ts';
import { createGuestWriter } from '../src/writers/guest/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { delay, waitFor, withTimeout } from './helpers/guests/process.ts';
import { scriptedWriter } from './helpers/scripted-writer.ts';
import { flood, floodFigures, type Flood } from './helpers/socket-flood.ts';

const BIN = join(import.meta.dirname, '..', 'bin', 'quiesce.js');
const copy = createProviders().find((p) => p.name === 'copy')!;
/** The agent's handshake timeout (connection-limits.ts), and what a loaded machine adds to it. */
const HANDSHAKE_MS = 5000;
const SLACK_MS = 2000;

let root: string;
let host: TlsIdentity;
let stranger: TlsIdentity;
let guestFiles: IdentityFiles;
let agent: { child: ChildProcess; port: number; stdout: () => string; stderr: () => string } | undefined;
const windows: Record<string, number | null> = {};

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-idle-'));
  const hostFiles = await makeIdentity(join(root, 'host'), 'host', 'backup-host');
  host = await loadIdentity(hostFiles);
  stranger = await loadIdentity(await makeIdentity(join(root, 'stranger'), 'stranger', 'stranger'));
  guestFiles = await makeIdentity(join(root, 'guest', 'tls'), 'agent', 'vm1');
  agent = await startAgentProcess(hostFiles);
});

after(async () => {
  if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
    const exited = new Promise((resolve) => agent!.child.once('exit', resolve));
    agent.child.kill('SIGTERM');
    await withTimeout(exited, 10_000).catch(() => agent!.child.kill('SIGKILL'));
  }
  await rm(root, { recursive: true, force: true });
});

/** `quiesce agent --config F` under `prlimit --nofile=1024:1024`, serving one SQLite writer on 127.0.0.1. */
async function startAgentProcess(hostFiles: IdentityFiles): Promise<NonNullable<typeof agent>> {
  const dir = join(root, 'guest');
  const database = join(dir, 'data', 'ledger.db');
  await mkdir(join(dir, 'data'), { recursive: true });
  const db = new Database(database);
  db.exec('CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER); INSERT INTO ledger (amount) VALUES (42);');
  db.close();
  const config = join(dir, 'agent.yaml');
  await writeFile(
    config,
    stringify({
      stateDir: join(dir, 'state'),
      stagingDir: join(dir, 'staging'),
      registrationDir: join(dir, 'writers'),
      policy: { freezeTimeout: '10s' },
      tls: { key: guestFiles.key, cert: guestFiles.cert },
      // No file-system freeze: the database lives on this machine's own /tmp.
      agent: { name: 'vm1', listen: '127.0.0.1:0', hosts: [hostFiles.cert], freezeFilesystems: false },
      writers: [{ type: 'sqlite', name: 'ledger', path: database }],
      paths: [],
    }),
  );
  const child = spawn('prlimit', ['--nofile=1024:1024', '--', process.execPath, BIN, 'agent', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-100_000)));
  await waitFor('the agent to listen', 30_000, () => {
    if (child.exitCode !== null) throw new Error(`the agent exited: ${stderr}`);
    return /listening on 127\.0\.0\.1:\d+/.test(stdout);
  });
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
  return { child, port, stdout: () => stdout, stderr: () => stderr };
}

/** One host set over the agent `name` at 127.0.0.1:`port` (its certificate `cert`), with `hostWriters` beside it. */
async function hostSet(
  port: number,
  options: { name?: string; cert?: string; hostWriters?: SetWriter[] } = {},
): Promise<SetReport> {
  const name = options.name ?? 'vm1';
  const disk = join(root, `${name}.img`);
  await writeFile(disk, `disk of ${name}`);
  const guest: SetWriter = {
    name,
    policy: 'prefer',
    endpoint: createGuestWriter({
      name,
      disks: [disk],
      agent: connectAgent(`127.0.0.1:${port}`, {
        identity: host,
        pinned: await readFile(options.cert ?? guestFiles.cert),
        callTimeoutMs: 10_000,
        keepaliveTimeMs: 2000,
      }),
      honorFull: true,
    }),
  };
  const writers = [guest, ...(options.hostWriters ?? [])];
  try {
    return await runSnapshotSet({
      kind: 'backup',
      backupType: 'full',
      writers,
      paths: [],
      stateDir: join(root, 'host-state'),
      stagingDir: join(root, 'host-staging'),
      resolveProvider: async () => ({ provider: copy, level: 'crash' }),
      freezeTimeoutMs: 10_000,
      callTimeoutMs: 10_000,
    });
  } finally {
    await Promise.all(writers.map((w) => w.endpoint.close()));
  }
}

/** The guest took part whole: application level, its writer frozen and thawed. Answers its freeze window. */
function assertApplication(report: SetReport): number | null {
  const guest = report.guests.find((g) => g.name === 'vm1');
  assert.ok(guest, JSON.stringify(report));
  assert.equal(report.status, 'succeeded', JSON.stringify(report.error ?? guest.error));
  assert.equal(guest.consistency, 'application', JSON.stringify(guest.error));
  assert.deepEqual(
    guest.writers.map((w) => [w.name, w.consistency]),
    [['ledger', 'application']],
  );
  return guest.freezeWindowMs;
}

/** The agent still answers a fresh connection, and is alive and printed no stack trace. */
async function assertAgentAnswers(port: number): Promise<void> {
  const endpoint = connectAgent(`127.0.0.1:${port}`, {
    identity: host,
    pinned: await readFile(guestFiles.cert),
    callTimeoutMs: 5000,
  });
  try {
    assert.equal((await endpoint.identify()).name, 'vm1');
  } finally {
    await endpoint.close();
  }
  assert.equal(agent!.child.exitCode, null, agent!.stderr());
  assert.doesNotMatch(agent!.stderr(), /\n\s+at /, 'no stack trace');
}

/**
 * 2,000 idle connections from `from`, then the host's set while the survivors are still held;
 * then every one is closed by the agent within the handshake timeout.
 */
async function idleFlood(t: TestContext, label: string, from: string[]): Promise<void> {
  const { port } = agent!;
  let idle: Flood | undefined;
  try {
    idle = await flood({ port, count: 2000, from });
    const opened = Date.now();
    const atSet = idle.open();
    const setStart = Date.now();
    windows[label] = assertApplication(await hostSet(port));
    const setMs = Date.now() - setStart;
    await assertAgentAnswers(port);
    await delay(Math.max(0, HANDSHAKE_MS + SLACK_MS - (Date.now() - opened)));
    const figures = floodFigures(idle.probes);
    t.diagnostic(
      `${label}: ${figures.connected} connected in ${opened - idle.startedAt} ms; ${atSet} not yet closed by the agent when the set ` +
        `started (${setMs} ms, freeze window ${windows[label]} ms); closed by the agent ${figures.closedByAgent} ` +
        `(${figures.closedWithin1s} within 1 s, the last after ${figures.longestOpenMs} ms); ` +
        `${figures.stillOpen} open ${HANDSHAKE_MS + SLACK_MS} ms after the flood`,
    );
    assert.ok(figures.connected >= 1900, `only ${figures.connected} of 2000 connected`);
    assert.equal(figures.stillOpen, 0, 'every idle connection is closed by the agent');
    assert.ok(figures.longestOpenMs <= HANDSHAKE_MS + SLACK_MS, `one stayed open ${figures.longestOpenMs} ms`);
    assert.equal(figures.bytes, 0, 'the agent never answered an idle connection');
  } finally {
    idle?.close();
  }
}

describe('a stranger cannot lower a guest level', () => {
  test('the host set without a flood: the guest is application-consistent', async (t) => {
    windows.none = assertApplication(await hostSet(agent!.port));
    const line = agent!.stdout().split('\n')[0]!;
    t.diagnostic(`startup: ${line}; freeze window without a flood ${windows.none} ms`);
    assert.match(line, /open files 1024; unauthenticated connections: 64 a peer, 256 in all, 5 s each/);
  });

  test("2,000 idle connections from the host's own address: application, and all closed by the handshake timeout", (t) =>
    idleFlood(t, "the host's address", ['127.0.0.1']));

  test('2,000 idle connections from 40 other addresses: application, and all closed by the handshake timeout', (t) =>
    idleFlood(
      t,
      '40 addresses',
      Array.from({ length: 40 }, (_, i) => `127.0.0.${i + 2}`),
    ));

  test('a set while 2,000 idle connections keep arriving from its own address: application', async (t) => {
    const { port } = agent!;
    let idle: Flood | undefined;
    try {
      const arriving = flood({ port, count: 2000, from: ['127.0.0.1'], batch: 50 });
      const setStart = Date.now();
      windows.during = assertApplication(await hostSet(port));
      t.diagnostic(`during a flood: the set took ${Date.now() - setStart} ms, freeze window ${windows.during} ms`);
      idle = await arriving;
      await assertAgentAnswers(port);
    } finally {
      idle?.close();
    }
  });

  test('200 TLS connections with a certificate the agent does not pin are refused and closed', async (t) => {
    const { port } = agent!;
    let wrong: Flood | undefined;
    try {
      wrong = await flood({ port, count: 200, from: ['127.0.0.1'], tls: stranger, batch: 50 });
      await waitFor(
        'the agent to close every wrong-certificate connection',
        HANDSHAKE_MS + SLACK_MS,
        () => wrong!.open() === 0,
      );
      const figures = floodFigures(wrong.probes);
      t.diagnostic(
        `wrong certificate: ${figures.connected} connected, ${figures.tlsDone} finished the client's side of TLS, ` +
          `${figures.closedByAgent} closed by the agent (the last after ${figures.longestOpenMs} ms), ${figures.bytes} bytes answered`,
      );
      assert.equal(figures.connected, 200);
      assert.equal(figures.closedByAgent, 200);
      assert.equal(figures.bytes, 0, 'no HTTP/2 byte reaches a stranger');
      assert.ok(figures.longestOpenMs < HANDSHAKE_MS, 'refused at the handshake, not at the timeout');
      windows.wrong = assertApplication(await hostSet(port));
      await assertAgentAnswers(port);
    } finally {
      wrong?.close();
    }
  });

  test('an authenticated connection with no call is closed at the idle timeout; a live session is never cut', async (t) => {
    const dir = join(root, 'vm2');
    const files = await makeIdentity(join(dir, 'tls'), 'agent', 'vm2');
    const log: string[] = [];
    const inProcess = await startAgent({
      name: 'vm2',
      listen: '127.0.0.1:0',
      hosts: [join(root, 'host', 'host.crt')],
      tls: files,
      writers: [
        {
          name: 'db',
          policy: 'prefer',
          endpoint: createWriterRuntime(scriptedWriter({ name: 'db', log, files: [join(dir, 'data')] })),
        },
      ],
      paths: [],
      stateDir: join(dir, 'state'),
      stagingDir: join(dir, 'staging'),
      freezeTimeoutMs: 10_000,
      freezeFilesystems: false,
      freezeRoot: false,
      limits: { idleTimeoutMs: 1000 },
    });
    const port = Number(inProcess.address.split(':').pop());
    let silent: Flood | undefined;
    try {
      silent = await flood({ port, count: 1, from: ['127.0.0.1'], tls: host });
      await waitFor('the idle authenticated connection to be closed', 5000, () => silent!.open() === 0);
      const [probe] = silent.probes;
      const idleMs = probe!.closedAt! - probe!.connectedAt!;
      assert.ok(probe!.tlsDone && probe!.bytes > 0, 'it was accepted (HTTP/2 SETTINGS came)');
      // Before the keepalive (2 s + 1 s unanswered, this client answers no ping) would close it.
      assert.ok(idleMs >= 900 && idleMs < 2500, `closed after ${idleMs} ms, not at the idle timeout`);
      // A host writer that takes 3 s to freeze: the guest holds its session that long, with no call.
      const slow = scriptedWriter({ name: 'slow', log });
      const freeze = slow.freeze.bind(slow);
      slow.freeze = async (context) => {
        await delay(3000);
        return freeze(context);
      };
      const report = await hostSet(port, {
        name: 'vm2',
        cert: files.cert,
        hostWriters: [{ name: 'slow', policy: 'require', endpoint: createWriterRuntime(slow) }],
      });
      const guest = report.guests[0]!;
      t.diagnostic(
        `idle timeout 1000 ms: an authenticated connection with no call closed after ${idleMs} ms; ` +
          `a session held ${guest.freezeWindowMs} ms frozen with no call: ${guest.consistency}`,
      );
      assert.equal(report.status, 'succeeded', JSON.stringify(report.error ?? guest.error));
      assert.equal(guest.consistency, 'application');
      assert.ok((guest.freezeWindowMs ?? 0) >= 2500, `frozen ${guest.freezeWindowMs} ms`);
    } finally {
      silent?.close();
      await inProcess.close();
    }
  });

  test('figures', (t) => {
    t.diagnostic(`freeze windows (ms): ${JSON.stringify(windows)}`);
  });
});
