// The writer contract on a qemu-ga guest (`createQgaGuest`) against the real Debian qemu-ga,
// started by the test on a Unix socket, freezing ONLY an ext4 file system on a loop device (the
// writer is given that mount point alone; the loop device's backing file stands for the guest's
// disk image). Runs alone (scripts/test.mjs): qemu-ga's thaw thaws every file system it froze.
// Needs root and /usr/sbin/qemu-ga; says why when it skips.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { QgaClient, createQgaGuest } from '../src/writers/qga/index.ts';
import { makeLoopFs, type LoopFs } from './helpers/loop-fs.ts';
import { WRITER_CONTRACT_CASES, runWriterContract } from './writer-contract.ts';

const execFileAsync = promisify(execFile);
const QEMU_GA = '/usr/sbin/qemu-ga';
const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;

function installed(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

const root = await mkdtemp(join(tmpdir(), 'quiesce-writer-contract-qga-'));
let guestFs: LoopFs | null = null;
let image = '';
let skip: string | null = null;
if (process.getuid?.() !== 0) skip = 'the qemu-ga writer freezes a loop-mounted file system: it needs root';
else if (!installed(QEMU_GA)) skip = `${QEMU_GA} is not installed (apt-get install qemu-guest-agent)`;
else {
  const made = await makeLoopFs('ext4', 64);
  if ('skip' in made) skip = made.skip;
  else {
    guestFs = made;
    image = (await run('losetup', ['-n', '-O', 'BACK-FILE', made.device])).stdout.trim();
  }
}

function run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { env: { ...process.env, PATH }, encoding: 'utf8' });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

interface Agent {
  socket: string;
  stop(): Promise<void>;
}

let agentCount = 0;
/** The real qemu-ga on a Unix socket and a state dir of its own, answering pings. */
async function startAgent(): Promise<Agent> {
  const dir = join(root, `agent-${agentCount++}`);
  await mkdir(join(dir, 'state'), { recursive: true });
  const socket = join(dir, 'qga.sock');
  const child = spawn(
    QEMU_GA,
    ['--method', 'unix-listen', '--path', socket, '--statedir', join(dir, 'state'), '--pidfile', join(dir, 'pid')],
    { stdio: 'ignore' },
  );
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    // qemu-ga ignores SIGTERM while it believes the guest is frozen; SIGKILL then.
    child.kill('SIGTERM');
    if (!(await Promise.race([exited(child).then(() => true), sleep(2_000).then(() => false)]))) {
      child.kill('SIGKILL');
      await exited(child);
    }
  };
  for (let attempt = 0; ; attempt++) {
    try {
      const client = await QgaClient.connect(socket, { timeoutMs: 1_000 });
      await client.ping().finally(() => client.close());
      return { socket, stop };
    } catch (error) {
      if (child.exitCode !== null || attempt > 100) {
        await stop();
        throw new Error(`qemu-ga did not come up on ${socket}: ${String(error)}`);
      }
      await sleep(50);
    }
  }
}

/** Writes that could not finish while the file system was frozen: they end at the thaw. */
const writers: ChildProcess[] = [];

/** Whether a write and fsync on the guest's file system, by another process, finishes within `ms`. */
async function writable(ms: number): Promise<boolean> {
  const path = join(guestFs!.mountPoint, `probe-${Date.now()}`);
  const script = `const fs = require('node:fs'); const fd = fs.openSync(${JSON.stringify(path)}, 'w'); fs.writeSync(fd, 'probe'); fs.fsyncSync(fd); fs.closeSync(fd); fs.unlinkSync(${JSON.stringify(path)});`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  writers.push(child);
  const done = new Promise<boolean>((resolve) => child.once('exit', (code) => resolve(code === 0)));
  return Promise.race([done, sleep(ms).then(() => false)]);
}

/** Frozen as qemu-ga says; running only when a write really gets through too. */
async function guestFrozen(socket: string): Promise<boolean> {
  const client = await QgaClient.connect(socket, { timeoutMs: 2_000 });
  const status = await client.status().finally(() => client.close());
  if (status === 'frozen') return true;
  return !(await writable(3_000));
}

const agents: Agent[] = [];

/** Whatever a case did, the next one starts thawed, with no agent left over. */
async function thawEverything(): Promise<void> {
  if (!guestFs) return;
  await run('fsfreeze', ['-u', guestFs.mountPoint]).catch(() => undefined); // fails when not frozen: fine
  for (const agent of agents.splice(0)) await agent.stop();
  await Promise.all(writers.splice(0).map((child) => exited(child)));
}

afterEach(thawEverything);
after(async () => {
  await thawEverything();
  await guestFs?.cleanup();
  await rm(root, { recursive: true, force: true });
});

runWriterContract(
  'qemu-ga guest',
  async () => {
    const agent = await startAgent();
    agents.push(agent);
    const endpoint = createQgaGuest({
      name: 'guest',
      socket: agent.socket,
      disks: [image],
      mountpoints: [guestFs!.mountPoint],
      timeoutMs: 5_000,
    });
    return { endpoint, isFrozen: () => guestFrozen(agent.socket) };
  },
  { skip: skip === null ? [] : [{ reason: skip, tests: [...WRITER_CONTRACT_CASES] }] },
);
