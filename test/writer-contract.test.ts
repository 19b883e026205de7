// The writer contract on every kind of writer that runs without a VM: the SDK runtime in process
// and over gRPC, a guest's agent side in process and its host side over mutual TLS on loopback,
// SQLite on a real database file, and exec holding a real process stopped. (qemu-ga runs alone,
// in writer-contract-qga.test.ts.)
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { QuiesceError, type WriterMetadata } from '../src/model/index.ts';
import { createAgentEndpoint, startAgent } from '../src/agent/index.ts';
import {
  connectAgent,
  connectWriter,
  loadIdentity,
  makeIdentity,
  readPem,
  serveWriter,
  type IdentityFiles,
  type TlsIdentity,
} from '../src/rpc/index.ts';
import { createExecWriter } from '../src/writers/exec/index.ts';
import { createGuestWriter } from '../src/writers/guest/index.ts';
import { createWriterRuntime, type WriterDefinition } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { runWriterContract, type WriterFixture, type WriterFixtureOptions } from './writer-contract.ts';

let root: string;
let count = 0;
let hostFiles: IdentityFiles;
let host: TlsIdentity;
let agentFiles: IdentityFiles;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-writer-contract-'));
  hostFiles = await makeIdentity(join(root, 'tls'), 'host', 'backup-host');
  host = await loadIdentity(hostFiles);
  agentFiles = await makeIdentity(join(root, 'tls'), 'agent', 'guest');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshDir(label: string): Promise<string> {
  const dir = join(root, `${label}-${count++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** A stand-in application: frozen is what its users would see; every handler call is logged. */
interface ProbeApplication {
  definition: WriterDefinition;
  frozen: boolean;
  calls: string[];
}

function probeApplication(name = 'probe'): ProbeApplication {
  const metadata: WriterMetadata = {
    name,
    classId: 'test.probe',
    instanceId: name,
    usage: 'back-end',
    components: [
      {
        name: 'data',
        logicalPath: name,
        kind: 'files',
        selectable: true,
        readableAfterThaw: false,
        files: [{ path: '/srv/probe', pattern: '*', recursive: true, isLog: false }],
      },
    ],
    backupTypes: ['full', 'copy', 'incremental', 'differential'],
    restoreMethod: 'restore-if-can-replace',
  };
  const app: ProbeApplication = {
    frozen: false,
    calls: [],
    definition: {
      metadata,
      prepareSnapshot: async () => void app.calls.push('prepare-snapshot'),
      freeze: async (context) => {
        app.calls.push('freeze');
        if (context.signal.aborted) throw new QuiesceError('retryable', 'the freeze was cancelled before it began');
        app.frozen = true;
      },
      thaw: async () => {
        app.calls.push('thaw');
        app.frozen = false;
      },
      abort: async () => void app.calls.push('abort'),
      shutdown: async () => void app.calls.push('shutdown'),
    },
  };
  return app;
}

function probeFixture(app: ProbeApplication, endpoint: WriterFixture['endpoint']): WriterFixture {
  return { endpoint, isFrozen: async () => app.frozen, observe: async () => [...app.calls] };
}

runWriterContract('SDK runtime', async () => {
  const app = probeApplication();
  return probeFixture(app, createWriterRuntime(app.definition));
});

runWriterContract('SDK runtime over gRPC', async () => {
  const app = probeApplication();
  const runtime = createWriterRuntime(app.definition);
  const dir = await freshDir('grpc');
  const server = await serveWriter(runtime, join(dir, 'writer.sock'), { heartbeatIntervalMs: 500 });
  return {
    ...probeFixture(app, connectWriter(join(dir, 'writer.sock'), { callTimeoutMs: 10_000 })),
    cleanup: async () => {
      await server.close();
      await runtime.close();
    },
  };
});

/** The guest's own set: one probe application behind the SDK runtime, no file system frozen. */
async function guestRuntimeOptions(app: ProbeApplication, thawDeadlineMs: number) {
  const dir = await freshDir('guest');
  return {
    name: 'guest',
    writers: [{ name: 'app', policy: 'require' as const, endpoint: createWriterRuntime(app.definition) }],
    paths: [],
    stateDir: join(dir, 'state'),
    stagingDir: join(dir, 'staging'),
    // The guest freezes in the host's prepare-snapshot, before any freeze names a deadline.
    freezeTimeoutMs: thawDeadlineMs,
    callTimeoutMs: 10_000,
    freezeFilesystems: false,
    freezeRoot: false,
  };
}

runWriterContract('guest runtime (agent side)', async ({ thawDeadlineMs }: WriterFixtureOptions) => {
  const app = probeApplication();
  return probeFixture(app, createAgentEndpoint(await guestRuntimeOptions(app, thawDeadlineMs)));
});

/** A guest writer on the host, its agent over mutual TLS on loopback, and the probe application in the guest. */
async function hostSideGuest(thawDeadlineMs: number) {
  const app = probeApplication();
  const { name: _name, ...settings } = await guestRuntimeOptions(app, thawDeadlineMs);
  const agent = await startAgent({
    ...settings,
    name: 'guest',
    listen: '127.0.0.1:0',
    hosts: [hostFiles.cert],
    tls: agentFiles,
  });
  const connection = connectAgent(agent.address, {
    identity: host,
    pinned: await readPem(agentFiles.cert, 'cert'),
    callTimeoutMs: 10_000,
    keepaliveTimeMs: 2000,
  });
  const disk = join(await freshDir('disk'), 'guest.img');
  await writeFile(disk, 'the guest disk');
  const endpoint = createGuestWriter({ name: 'guest', disks: [disk], agent: connection, honorFull: true });
  return { app, endpoint, cleanup: () => agent.close() };
}

runWriterContract('guest writer (host side, over mutual TLS)', async ({ thawDeadlineMs }: WriterFixtureOptions) => {
  const { app, endpoint, cleanup } = await hostSideGuest(thawDeadlineMs);
  return { ...probeFixture(app, endpoint), cleanup };
});

test('a guest writer refuses a second set before it touches the first one: its report and freeze go on', async () => {
  const { app, endpoint, cleanup } = await hostSideGuest(30_000);
  try {
    const first = 'first-set';
    const session = await endpoint.openSession({ setId: first });
    await endpoint.prepareBackup({ setId: first, backupType: 'full', components: [] });
    await endpoint.prepareSnapshot({ setId: first });
    const before = endpoint.guestReport!();
    assert.notEqual(before?.frozenAtMs ?? null, null, 'the first set froze the guest');
    for (const call of [
      () => endpoint.openSession({ setId: 'second-set' }),
      () => endpoint.prepareBackup({ setId: 'second-set', backupType: 'full', components: [] }),
    ]) {
      await assert.rejects(call(), (e: unknown) => e instanceof QuiesceError && e.code === 'retryable');
    }
    await endpoint.shutdown({ setId: 'second-set' });
    assert.deepEqual(endpoint.guestReport!(), before, 'the first set’s report is as it was');
    assert.equal(app.frozen, true, 'the guest is still frozen for the first set');
    await endpoint.thaw({ setId: first });
    assert.equal(app.frozen, false);
    await endpoint.shutdown({ setId: first });
    await session.close();
    // The next set is welcome once the first has ended.
    const next = await endpoint.openSession({ setId: 'third-set' });
    await endpoint.prepareBackup({ setId: 'third-set', backupType: 'full', components: [] });
    await endpoint.shutdown({ setId: 'third-set' });
    await next.close();
  } finally {
    await endpoint.close();
    await cleanup();
  }
});

runWriterContract('SQLite', async () => {
  const dir = await freshDir('sqlite');
  const path = join(dir, 'shop.db');
  const setup = new Database(path);
  setup.pragma('journal_mode = WAL');
  setup.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)');
  setup.close();
  // The application's own connection: a write waits at most 50 ms for the lock, then fails busy.
  const app = new Database(path, { timeout: 50 });
  const rows = app.prepare('SELECT count(*) AS n FROM orders');
  rows.get(); // The application has the database open (its -wal and -shm) before the writer comes.
  const endpoint = createWriterRuntime(
    createSqliteWriter({ name: 'shop', path, stateDir: join(dir, 'state'), lockTimeoutMs: 2_000 }),
  );
  return {
    endpoint,
    isFrozen: async () => {
      try {
        app.prepare('INSERT INTO orders (item) VALUES (?)').run('probe');
        return false;
      } catch (error) {
        if ((error as { code?: unknown }).code === 'SQLITE_BUSY') return true;
        throw error;
      }
    },
    // Identify opens nothing and writes nothing: no new file (history, -wal), no row.
    observe: async () => ({
      files: (await readdir(dir, { recursive: true })).sort(),
      rows: rows.get(),
    }),
    cleanup: async () => {
      app.close();
    },
  };
});

/** Whether the process is stopped (SIGSTOP), as /proc says: `T`. */
function stopped(pid: number): boolean {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'T';
}

runWriterContract('exec', async () => {
  const dir = await freshDir('exec');
  const log = join(dir, 'scripts.log');
  await writeFile(log, '');
  const child: ChildProcess = spawn('sleep', ['600'], { stdio: 'ignore' });
  const pid = String(child.pid);
  // A stop takes effect when the process next runs: the freeze script waits until it has.
  const freeze =
    'echo freeze >> "$1"; kill -STOP "$2"; until grep -q "^State:.*stopped" "/proc/$2/status"; do sleep 0.01; done';
  const thaw = 'echo thaw >> "$1"; kill -CONT "$2"';
  const script = (body: string): string[] => ['/bin/sh', '-c', body, 'sh', log, pid];
  const endpoint = createWriterRuntime(
    createExecWriter({ name: 'app', freeze: script(freeze), thaw: script(thaw), timeoutMs: 5_000 }),
  );
  return {
    endpoint,
    isFrozen: async () => stopped(child.pid!),
    observe: async () => readFile(log, 'utf8'),
    cleanup: async () => {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
});
