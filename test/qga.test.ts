// The qemu-ga writer against the real Debian qemu-ga, started by the test, freezing ONLY an ext4
// file system on a loop device (never any other file system of this machine: every writer here
// is given that mount point alone). The loop device's backing file stands for the guest's disk
// image, and whole sets run through the real coordinator with the copy provider.
// Needs root and /usr/sbin/qemu-ga; says why when it skips.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, constants, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
// A whole set through the real coordinator is what a user runs; the writer itself never imports it.
import { runSnapshotSet, type SnapshotSetOptions } from '../src/coordinator/index.ts';
import type { Provider, QuiescePolicy, SetReport } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { makeLoopFs, type LoopFs } from './helpers/loop-fs.ts';
import type { WriterDefinition } from '../src/writers/sdk/definition.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { QgaClient } from '../src/writers/qga/qga-client.ts';
import { createQgaGuest } from '../src/writers/qga/index.ts';
import { createQgaWriter } from '../src/writers/qga/qga-writer.ts';

const execFileAsync = promisify(execFile);
const QEMU_GA = '/usr/sbin/qemu-ga';
const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;
const copy = createProviders().find((p) => p.name === 'copy')!;

let root: string;
let guestFs: LoopFs | null = null;
/** The loop device's backing file: the guest's "disk image" on the host. */
let image: string;
let skip: string | false = false;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-qga-'));
  if (process.getuid?.() !== 0) {
    skip = 'the qemu-ga tests freeze a loop-mounted file system: they need root';
    return;
  }
  try {
    await access(QEMU_GA, constants.X_OK);
  } catch {
    skip = `${QEMU_GA} is not installed (apt-get install qemu-guest-agent)`;
    return;
  }
  const made = await makeLoopFs('ext4', 64);
  if ('skip' in made) {
    skip = made.skip;
    return;
  }
  guestFs = made;
  image = (await run('losetup', ['-n', '-O', 'BACK-FILE', made.device])).stdout.trim();
  assert.ok(image.startsWith('/'), `the backing file of ${made.device}: ${image}`);
});

/** Agents started by the test running now; stopped (after a thaw) when it ends, pass or fail. */
const agents: Agent[] = [];
const blocked: ChildProcess[] = [];

afterEach(async () => {
  await thawEverything();
  for (const agent of agents.splice(0)) await agent.stop();
  await Promise.all(blocked.splice(0).map((child) => exited(child)));
});

after(async () => {
  await thawEverything();
  for (const agent of agents.splice(0)) await agent.stop();
  await guestFs?.cleanup();
  await rm(root, { recursive: true, force: true });
});

/** Thaws the test's file system whatever happened: through every live agent, then the kernel. */
async function thawEverything(): Promise<void> {
  if (!guestFs) return;
  for (const agent of agents) {
    if (!agent.alive()) continue;
    process.kill(agent.pid, 'SIGCONT');
    try {
      const client = await QgaClient.connect(agent.socket, { timeoutMs: 2_000 });
      await client.thaw().finally(() => client.close());
    } catch {
      // the kernel thaw below is enough
    }
  }
  await run('fsfreeze', ['-u', guestFs.mountPoint]).catch(() => undefined); // fails when not frozen: fine
}

function run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { env: { ...process.env, PATH }, encoding: 'utf8' });
}

async function runCode(file: string, args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(file, args);
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof failed.code === 'number' ? failed.code : -1,
      output: `${failed.stdout ?? ''}${failed.stderr ?? ''}`,
    };
  }
}

interface Agent {
  pid: number;
  socket: string;
  log: string;
  alive(): boolean;
  stop(): Promise<void>;
}

let agentCount = 0;
/** Starts the real qemu-ga on a Unix socket of its own, with a state dir of its own. */
async function startAgent(options: { hook?: string } = {}): Promise<Agent> {
  const dir = join(root, `agent-${agentCount++}`);
  await mkdir(join(dir, 'state'), { recursive: true });
  const socket = join(dir, 'qga.sock');
  const log = join(dir, 'qemu-ga.log');
  const args = [
    '--method',
    'unix-listen',
    '--path',
    socket,
    '--statedir',
    join(dir, 'state'),
    '--pidfile',
    join(dir, 'qemu-ga.pid'),
    '--logfile',
    log,
  ];
  if (options.hook) args.push(`--fsfreeze-hook=${options.hook}`);
  const child = spawn(QEMU_GA, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const agent: Agent = {
    pid: child.pid!,
    socket,
    log,
    alive,
    async stop() {
      if (!alive()) return;
      child.kill('SIGCONT');
      // qemu-ga ignores SIGTERM while it believes the guest is frozen; SIGKILL then.
      child.kill('SIGTERM');
      const gone = await Promise.race([exited(child).then(() => true), sleep(2_000).then(() => false)]);
      if (!gone) {
        child.kill('SIGKILL');
        await exited(child);
      }
    },
  };
  agents.push(agent);
  for (let i = 0; ; i++) {
    try {
      const client = await QgaClient.connect(socket, { timeoutMs: 1_000 });
      await client.ping().finally(() => client.close());
      return agent;
    } catch (error) {
      if (!alive() || i > 100) throw new Error(`qemu-ga did not come up on ${socket}: ${stderr}${String(error)}`);
      await sleep(50);
    }
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function agentStatus(socket: string): Promise<string> {
  const client = await QgaClient.connect(socket, { timeoutMs: 2_000 });
  try {
    return await client.status();
  } finally {
    await client.close();
  }
}

/**
 * A write and fsync of `path` by another process (a frozen file system blocks it, uninterruptibly,
 * so it must never be done by this process). `started` resolves just before it opens the file.
 */
function startWrite(
  path: string,
  content: string,
): { started: Promise<void>; done: Promise<number | null>; child: ChildProcess } {
  const script = `
    const fs = require('node:fs');
    process.stdout.write('started\\n');
    const fd = fs.openSync(${JSON.stringify(path)}, 'w');
    fs.writeSync(fd, ${JSON.stringify(content)});
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const dir = fs.openSync(${JSON.stringify(dirname(path))}, 'r');
    fs.fsyncSync(dir);
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  blocked.push(child);
  const started = new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  const done = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { started, done, child };
}

/** Whether a write and fsync on the guest's file system completes within `ms`. */
async function writable(ms = 3_000): Promise<boolean> {
  const write = startWrite(join(guestFs!.mountPoint, `probe-${Date.now()}.txt`), 'probe');
  const code = await Promise.race([write.done, sleep(ms).then(() => 'blocked' as const)]);
  return code === 0;
}

/** The qga writer for the test's file system; the mount point is always given, never "all". */
function guestWriter(socket: string, options: { timeoutMs?: number; mountpoints?: string[] } = {}): WriterDefinition {
  const mountpoints = options.mountpoints ?? [guestFs!.mountPoint];
  for (const mountpoint of mountpoints)
    assert.ok(
      mountpoint.startsWith(root) || mountpoint.startsWith(dirname(guestFs!.mountPoint)),
      `never freeze ${mountpoint}`,
    );
  return createQgaWriter({ name: 'guest', socket, disks: [image], mountpoints, timeoutMs: options.timeoutMs ?? 5_000 });
}

let setCount = 0;
function setOptions(
  definition: WriterDefinition,
  policy: QuiescePolicy,
  provider: Provider = copy,
  extra: Partial<SnapshotSetOptions> = {},
): SnapshotSetOptions {
  const n = setCount++;
  return {
    kind: 'snapshot',
    backupType: 'full',
    writers: [{ name: 'guest', policy, endpoint: createWriterRuntime(definition) }],
    paths: [],
    stateDir: join(root, `state-${n}`),
    stagingDir: join(root, 'staging'),
    resolveProvider: async () => ({ provider, level: 'crash' }),
    freezeTimeoutMs: 20_000,
    callTimeoutMs: 20_000,
    ...extra,
  };
}

/** The copy provider with `beforeCommit` run inside the freeze, before the copy. */
function copyWith(beforeCommit: () => Promise<void>): Provider {
  return {
    name: 'copy',
    supports: (path, options) => copy.supports(path, options),
    prepare: (request, options) => copy.prepare(request, options),
    commit: async (request, options) => {
      await beforeCommit();
      return copy.commit(request, options);
    },
    release: (snapshot, options) => copy.release(snapshot, options),
  };
}

function guestComponent(report: SetReport): SetReport['components'][number] {
  const component = report.components.find((c) => c.writer === 'guest' && c.component === 'disks');
  assert.ok(component, `the report has the guest's disks: ${JSON.stringify(report.components)}`);
  return component;
}

async function ext4Features(file: string): Promise<string> {
  const { stdout } = await run('dumpe2fs', ['-h', file]);
  return /^Filesystem features:\s*(.*)$/m.exec(stdout)?.[1] ?? '';
}

describe('qga writer with the real qemu-ga', () => {
  test('a set freezes the guest file system for the commit, snapshots a clean image, and thaws it', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    const fs = guestFs!;
    // Written and made durable before the set: the snapshot must hold it bit for bit.
    const before = randomBytes(256 * 1024 + 123);
    const handle = await open(join(fs.mountPoint, 'before.bin'), 'w');
    await handle.writeFile(before);
    await handle.sync();
    await handle.close();

    let statusInCommit = '';
    let writeHeldInCommit = false;
    let during: ReturnType<typeof startWrite> | null = null;
    const provider = copyWith(async () => {
      // A second client of the agent sees the freeze (the writer holds no connection meanwhile).
      statusInCommit = await agentStatus(agent.socket);
      // An application in the guest tries to write now: the frozen file system holds it.
      during = startWrite(join(fs.mountPoint, 'during-freeze.txt'), 'written during the freeze');
      await during.started;
      writeHeldInCommit =
        (await Promise.race([during.done.then(() => 'done'), sleep(500).then(() => 'held')])) === 'held';
    });

    let inSnapshot: {
      fsck: { code: number; output: string };
      features: string;
      before: Buffer | null;
      during: boolean;
    } | null = null;
    const report = await runSnapshotSet({
      ...setOptions(guestWriter(agent.socket), 'require', provider),
      // As the CLI composes a qga guest: the writer plus the guest's node in the report.
      writers: [
        {
          name: 'guest',
          policy: 'require',
          endpoint: createQgaGuest({
            name: 'guest',
            socket: agent.socket,
            disks: [image],
            mountpoints: [fs.mountPoint],
            timeoutMs: 5_000,
          }),
        },
      ],
      use: async (view) => {
        const copyOfImage = view.resolve(image);
        assert.ok(copyOfImage, 'the set holds the disk image');
        const mnt = join(root, 'snapshot-mnt');
        await mkdir(mnt, { recursive: true });
        const fsck = await runCode('e2fsck', ['-f', '-n', copyOfImage]);
        const features = await ext4Features(copyOfImage);
        // noload: the journal is not replayed, so only what the freeze wrote home is seen.
        await run('mount', ['-o', 'ro,loop,noload', copyOfImage, mnt]);
        try {
          inSnapshot = {
            fsck,
            features,
            before: await readFile(join(mnt, 'before.bin')).catch(() => null),
            during: await access(join(mnt, 'during-freeze.txt')).then(
              () => true,
              () => false,
            ),
          };
        } finally {
          await run('umount', [mnt]);
        }
      },
    });

    assert.equal(report.status, 'succeeded', JSON.stringify(report.error ?? report.writers));
    assert.equal(statusInCommit, 'frozen', 'qemu-ga says frozen during the commit');
    assert.ok(writeHeldInCommit, 'a write to the guest file system was held during the commit');
    const component = guestComponent(report);
    assert.equal(component.consistency, 'filesystem', 'a qemu-ga freeze is file-system consistent, not application');
    assert.equal(component.status, 'succeeded');
    assert.equal(component.error, null);
    assert.equal(report.consistency, 'filesystem');
    const writer = report.writers.find((w) => w.name === 'guest')!;
    assert.equal(writer.classId, 'quiesce.qga');
    assert.equal(writer.instanceId, agent.socket);
    assert.ok(
      writer.freezeWindowMs !== null && writer.freezeWindowMs >= 500,
      `frozen through the commit: ${writer.freezeWindowMs} ms`,
    );

    const [node] = report.guests;
    assert.ok(node, 'the qga guest has its node in the report');
    assert.equal(node.agent, 'qga');
    assert.equal(node.consistency, 'filesystem');
    assert.equal(node.status, 'succeeded');
    assert.ok(
      node.freezeWindowMs !== null && node.freezeWindowMs >= 500 && node.frozenAtMs !== null && node.frozenAtMs >= 0,
    );

    // The write held during the freeze went through after the thaw.
    assert.equal(await (during as ReturnType<typeof startWrite> | null)?.done, 0);
    assert.equal(await readFile(join(fs.mountPoint, 'during-freeze.txt'), 'utf8'), 'written during the freeze');
    assert.equal(await agentStatus(agent.socket), 'thawed');
    assert.ok(await writable(), 'the guest file system is writable after the set');

    // The snapshot image: a cleanly frozen ext4 with the file written before, and not the one held.
    assert.ok(inSnapshot, 'the use looked at the snapshot');
    const seen = inSnapshot as {
      fsck: { code: number; output: string };
      features: string;
      before: Buffer | null;
      during: boolean;
    };
    assert.equal(seen.fsck.code, 0, `e2fsck of the snapshot image: ${seen.fsck.output}`);
    assert.doesNotMatch(seen.features, /needs_recovery/, 'the freeze flushed the journal: the image needs no recovery');
    assert.match(await ext4Features(image), /needs_recovery/, 'control: the live, mounted image does need recovery');
    assert.ok(seen.before, 'before.bin is in the snapshot image');
    assert.ok(seen.before.equals(before), 'before.bin is bit-exact in the snapshot image');
    assert.equal(seen.during, false, 'the write held by the freeze is not in the snapshot');
  });

  test('prefer: qemu-ga not running (no socket) leaves the guest crash-consistent, the set partial, the socket named', async (t) => {
    if (skip) return t.skip(skip);
    const socket = join(root, 'no-agent', 'qga.sock');
    const report = await runSnapshotSet(setOptions(guestWriter(socket), 'prefer'));
    assert.equal(report.status, 'partial');
    const component = guestComponent(report);
    assert.equal(component.consistency, 'crash');
    assert.equal(component.status, 'partial');
    assert.equal(component.error?.code, 'not-responding');
    assert.equal(component.error?.phase, 'prepare-snapshot');
    assert.ok(component.error?.message.includes(socket), component.error?.message);
    assert.match(component.error.message, /is qemu-ga running and listening on/);
    assert.ok(
      report.snapshots.some((s) => s.original === image),
      'the disk image was still taken, crash-consistent',
    );
  });

  test('prefer: a killed qemu-ga (stale socket) is not-responding too', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    process.kill(agent.pid, 'SIGKILL');
    while (agent.alive()) await sleep(10);
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket), 'prefer'));
    assert.equal(report.status, 'partial');
    const component = guestComponent(report);
    assert.equal(component.consistency, 'crash');
    assert.equal(component.error?.code, 'not-responding');
    assert.match(component.error.message, new RegExp(`nothing listens on ${agent.socket}`));
  });

  test('require: a stopped (hung) qemu-ga fails the set and nothing is left frozen', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    process.kill(agent.pid, 'SIGSTOP');
    const t0 = performance.now();
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket, { timeoutMs: 500 }), 'require'));
    assert.ok(performance.now() - t0 < 10_000, 'the set did not wait for the coordinator deadline');
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.code, 'not-responding');
    assert.equal(report.error?.writer, 'guest');
    assert.match(
      report.error.message,
      new RegExp(`no answer within 500 ms: is qemu-ga running and listening on ${agent.socket}`),
    );
    assert.equal(guestComponent(report).consistency, 'none');
    process.kill(agent.pid, 'SIGCONT');
    assert.equal(await agentStatus(agent.socket), 'thawed');
    assert.ok(await writable(), 'the guest file system is writable');
  });

  test('require: no agent at all fails the set before anything is frozen', async (t) => {
    if (skip) return t.skip(skip);
    const socket = join(root, 'no-agent-either', 'qga.sock');
    const report = await runSnapshotSet(setOptions(guestWriter(socket), 'require'));
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.code, 'not-responding');
    assert.ok(report.error.message.includes(socket));
    assert.equal(report.snapshots.length, 0, 'no snapshot was taken');
    assert.ok(await writable(), 'the guest file system is writable');
  });

  test('a commit that fails while the guest is frozen aborts the set and leaves it thawed', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    let statusInCommit = '';
    const failing = copyWith(async () => {
      statusInCommit = await agentStatus(agent.socket);
      throw new Error('the storage went away');
    });
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket), 'require', failing));
    assert.equal(statusInCommit, 'frozen', 'the commit ran while frozen');
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.phase, 'commit');
    assert.equal(guestComponent(report).consistency, 'none');
    assert.equal(await agentStatus(agent.socket), 'thawed');
    assert.ok(await writable(), 'the guest file system is writable after the abort');
  });

  test('a guest thawed by someone else during the commit is not reported file-system consistent', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    const thawedEarly = copyWith(async () => {
      const other = await QgaClient.connect(agent.socket);
      try {
        assert.equal(await other.thaw(), 1);
      } finally {
        await other.close();
      }
    });
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket), 'prefer', thawedEarly));
    assert.equal(report.status, 'partial');
    const component = guestComponent(report);
    assert.equal(component.consistency, 'crash', 'the commit was not inside the freeze');
    assert.equal(component.error?.code, 'retryable');
    assert.equal(component.error?.phase, 'thaw');
    assert.match(component.error.message, /thawed 0 file system\(s\) .* but had frozen 1: something else thawed/);
    assert.equal(await agentStatus(agent.socket), 'thawed');
  });

  for (const policy of ['prefer', 'require'] as const) {
    test(`${policy}: a guest frozen by someone else is refused (retryable) and left as that one froze it, abort included`, async (t) => {
      if (skip) return t.skip(skip);
      const agent = await startAgent();
      const other = await QgaClient.connect(agent.socket);
      try {
        assert.equal(await other.freeze([guestFs!.mountPoint]), 1);
      } finally {
        await other.close();
      }
      const report = await runSnapshotSet(setOptions(guestWriter(agent.socket), policy));
      assert.equal(report.status, policy === 'require' ? 'failed' : 'partial');
      const component = guestComponent(report);
      assert.equal(component.error?.code, 'retryable');
      assert.equal(component.error?.phase, 'prepare-snapshot');
      assert.match(component.error.message, /frozen already/);
      assert.equal(
        await agentStatus(agent.socket),
        'frozen',
        "neither thaw nor abort thawed the other client's freeze",
      );
      const owner = await QgaClient.connect(agent.socket);
      try {
        assert.equal(await owner.thaw(), 1);
      } finally {
        await owner.close();
      }
      assert.ok(await writable());
    });
  }

  test('mount points that are not file systems in the guest fail the freeze, naming them', async (t) => {
    if (skip) return t.skip(skip);
    const agent = await startAgent();
    const notAMount = join(guestFs!.mountPoint, 'just-a-directory');
    await mkdir(notAMount, { recursive: true });
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket, { mountpoints: [notAMount] }), 'require'));
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.code, 'nonretryable');
    assert.equal(report.error?.phase, 'freeze');
    assert.ok(report.error?.message.includes(notAMount), report.error?.message);
    assert.equal(await agentStatus(agent.socket), 'thawed');
  });

  test('a freeze the agent answers too late is undone by the thaw queued behind it', async (t) => {
    if (skip) return t.skip(skip);
    // A fsfreeze hook that takes 1.5 s before the freeze: the writer gives up on the answer after 500 ms.
    const hookLog = join(root, 'hook.log');
    const hook = join(root, 'slow-hook.sh');
    await writeFile(hook, `#!/bin/sh\necho "$1" >> ${hookLog}\n[ "$1" = freeze ] && sleep 1.5\nexit 0\n`);
    await chmod(hook, 0o755);
    const agent = await startAgent({ hook });
    const report = await runSnapshotSet(setOptions(guestWriter(agent.socket, { timeoutMs: 500 }), 'prefer'));
    assert.equal(report.status, 'partial');
    const component = guestComponent(report);
    assert.equal(component.consistency, 'crash');
    assert.equal(component.error?.code, 'not-responding');
    assert.equal(component.error?.phase, 'freeze');
    // The agent froze after the writer had given up, then ran the queued thaw.
    let hooks = '';
    for (let i = 0; i < 100 && !hooks.includes('thaw'); i++) {
      await sleep(50);
      hooks = await readFile(hookLog, 'utf8').catch(() => '');
    }
    assert.deepEqual(hooks.trim().split('\n'), ['freeze', 'thaw']);
    assert.equal(await agentStatus(agent.socket), 'thawed');
    assert.ok(await writable(), 'the guest file system is writable');
  });
});
