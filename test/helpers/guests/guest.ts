// One test guest: a process tree in its own network namespace (a veth link, host
// 10.213.<i>.1/30, guest 10.213.<i>.2/30) and its own private mount namespace, whose "disk" is
// an ext4 image file on the host volume, loop-mounted inside the guest's mount namespace only.
// Its main process is test/fixtures/guest-main.ts; we talk to it over IPC.
import { spawn, type ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { WorkerStats } from '../../../src/cli/demo/bank.ts';
import type { GuestConfig, GuestMessage, GuestRequest } from '../../fixtures/guest-main.ts';
import type { LoopFs } from '../loop-fs.ts';
import { liveGuests, type LiveGuest } from './crash-cleanup.ts';
import { loopDevicesOf, rescueFrozenLoop } from './images.ts';
import { ENV, errorText, run, waitFor, withTimeout } from './process.ts';
import { claimSubnet, releaseSubnet, RUN_BASE, type Subnet } from './subnets.ts';

const REPO = join(import.meta.dirname, '..', '..', '..');
const GUEST_MAIN = join(REPO, 'test', 'fixtures', 'guest-main.ts');

export interface StartGuestOptions {
  /** Letters, digits and dashes; unique per host. Names the image `<volume>/<name>.img`. */
  name: string;
  /** Size of the (sparse) ext4 image; default 1024 MiB. Not less for the bank: its two workers
   * write its WAL at ~200 MB/s and checkpoints lag by seconds, so it peaks at hundreds of MB. */
  imageMiB?: number;
  /** Boot from this existing image instead of formatting `<volume>/<name>.img` (a restored disk). */
  image?: string;
  /** Bank workers writing `<mountPoint>/bank.db`; default 2, 0 for no application. */
  bankWorkers?: number;
  /** A program to run inside the guest once its disk is mounted, e.g. an agent. Its cwd is the
   * mount point; its env has GUEST_NAME, GUEST_NETNS, GUEST_ADDRESS, GUEST_HOST_ADDRESS and
   * GUEST_MOUNT, plus `env`. Its output goes to the guest's stdout/stderr, prefixed. */
  command?: string[];
  env?: Record<string, string>;
  /** Files written into the guest's disk before the command starts; paths relative to the mount point. */
  files?: Record<string, string>;
  /** startGuest and restartCommand wait until a line of the command's output matches this. */
  commandReady?: RegExp;
  /** Bound on the guest's start (mount, bank, command readiness); default 45 s. */
  timeoutMs?: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** The exit code, or null when killed by a signal (then `signal` says which). */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Killed (SIGKILL, with its process group) after `timeoutMs`. The answer does not wait for
   * the process to be gone: one blocked on a frozen disk dies only at the thaw. */
  timedOut: boolean;
}

export interface ExecOptions {
  /** Working directory inside the guest (nsenter --wdns, util-linux >= 2.38); default `/`. */
  cwd?: string;
  env?: Record<string, string>;
  input?: string;
  /** Killed (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
}

export interface TestGuest {
  name: string;
  netns: string;
  /** The guest's IPv4 address (on its `eth0`), reachable from the host. */
  address: string;
  /** The host end's address, reachable from the guest. */
  hostAddress: string;
  /** The host end of the veth, in the root network namespace. */
  hostLink: string;
  /** The disk image, a file on the host volume. */
  image: string;
  /** Where the image is mounted; exists only in the guest's mount namespace. */
  mountPoint: string;
  /** The bank's database inside the guest, or null without bank workers. */
  bankPath: string | null;
  /** The guest's main process (guest-main.ts); its namespaces are the guest's. */
  mainPid: number;
  /** The command's pid (pids are not namespaced), or null when it is not running. */
  commandPid(): number | null;
  /** Runs argv inside the guest's network and mount namespaces; never throws on a nonzero exit. */
  exec(argv: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Signals the command and resolves once it has exited (with how, or null if it was not running). */
  killCommand(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: string | null } | null>;
  /** Starts the command again (after it was killed); resolves with its pid once it is ready. */
  restartCommand(): Promise<number>;
  /** Sets the host end of the veth down: the network is cut, the guest's processes live on. The
   * host's packets to the guest then fail at once (EHOSTUNREACH, from the fallback route; never
   * out of the machine); the guest's packets to the host are dropped silently (no carrier). */
  linkDown(): Promise<void>;
  /** Sets it up again and waits until the host routes to the guest again. */
  linkUp(): Promise<void>;
  /** Transfers the bank has committed so far. */
  bankProgress(): Promise<number>;
  /** Stops the bank workers and answers their final counts (the same answer when called again). */
  stopBank(): Promise<WorkerStats[]>;
  /** Stops everything in the guest, unmounts its disk, deletes its network. Idempotent; rejects
   * if something of the guest's could not be removed (after removing everything else). Its address
   * stays claimed (and unreachable, EHOSTUNREACH) until the host's cleanup(). */
  stop(): Promise<void>;
  /** Whether the guest's main process is gone. */
  readonly exited: boolean;
  /** Everything the guest's main process, its bank workers and its command wrote, for debugging. */
  readonly stdout: string;
  readonly stderr: string;
}

let nextIndex = 0;

/** A new sparse ext4 image of `sizeMiB`. */
async function makeDisk(image: string, sizeMiB: number): Promise<void> {
  const handle = await open(image, 'w');
  await handle.truncate(sizeMiB * 1024 * 1024);
  await handle.close();
  await run('mkfs.ext4', ['-q', '-F', image]);
}

/** The guest's network namespace, with a veth link to the host. */
async function makeNetwork(netns: string, hostLink: string, address: string, hostAddress: string): Promise<void> {
  await run('ip', ['netns', 'add', netns]);
  // The guest end is created inside the namespace directly, as eth0.
  await run('ip', ['link', 'add', hostLink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostLink]);
  await run('ip', ['link', 'set', hostLink, 'up']);
  await run('ip', ['-n', netns, 'addr', 'add', `${address}/30`, 'dev', 'eth0']);
  await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
}

/** guest-main in the guest's network namespace and a private mount namespace of its own. */
function spawnGuestMain(netns: string): ChildProcess {
  // `ip netns exec` and `unshare` both exec, so the IPC channel (fd 3) reaches guest-main.
  return spawn(
    'ip',
    [
      'netns',
      'exec',
      netns,
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      process.execPath,
      '--import',
      'tsx',
      GUEST_MAIN,
    ],
    { cwd: REPO, env: ENV, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
  );
}

export class Guest implements TestGuest {
  commandPidNow: number | null = null;
  stopped = false;
  private out = '';
  private err = '';
  private nextRequest = 1;
  private pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private stopping: Promise<void> | null = null;
  private readonly exitedPromise: Promise<void>;

  private constructor(
    readonly name: string,
    readonly netns: string,
    readonly address: string,
    readonly hostAddress: string,
    readonly hostLink: string,
    readonly image: string,
    readonly mountPoint: string,
    readonly bankPath: string | null,
    private readonly runDir: string,
    private readonly subnet: Subnet,
    private readonly child: ChildProcess,
  ) {
    this.mainPid = child.pid!;
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.out = (this.out + chunk).slice(-200_000);
      if (process.env.QUIESCE_TEST_GUEST_OUTPUT) process.stderr.write(chunk);
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.err = (this.err + chunk).slice(-200_000);
      if (process.env.QUIESCE_TEST_GUEST_OUTPUT) process.stderr.write(chunk);
    });
    child.on('message', (message: GuestMessage) => this.onMessage(message));
    // Never let an IPC write error (the guest died) crash the test process.
    child.on('error', () => {});
    this.exitedPromise = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else
        child.once('exit', () => {
          this.commandPidNow = null;
          for (const { reject } of this.pending.values())
            reject(new Error(`guest ${this.name} exited: ${this.err.slice(-2000)}`));
          this.pending.clear();
          resolve();
        });
    });
  }

  readonly mainPid: number;

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  static async start(volume: LoopFs, options: StartGuestOptions): Promise<Guest> {
    const sequence = ++nextIndex;
    const netns = `quiesce-${process.pid}-${sequence}`;
    const hostLink = `qg${process.pid}x${sequence}`.slice(0, 15);
    const runDir = join(RUN_BASE, netns);
    const mountPoint = join(runDir, 'disk');
    const bankWorkers = options.bankWorkers ?? 2;
    const image = options.image ?? join(volume.workDir, `${options.name}.img`);
    const subnet = await claimSubnet(netns);
    const address = `10.213.${subnet.index}.2`;
    const hostAddress = `10.213.${subnet.index}.1`;
    const live: LiveGuest = { netns, hostLink, mountPoint, runDir, mainPid: () => null };
    liveGuests.set(netns, live);

    let child: ChildProcess;
    try {
      if (options.image === undefined) await makeDisk(image, options.imageMiB ?? 1024);
      await makeNetwork(netns, hostLink, address, hostAddress);
      await mkdir(runDir, { recursive: true });
      child = spawnGuestMain(netns);
    } catch (error) {
      await run('ip', ['link', 'del', hostLink]).catch(() => {});
      await run('ip', ['netns', 'del', netns]).catch(() => {});
      await rm(runDir, { recursive: true, force: true });
      await releaseSubnet(subnet);
      liveGuests.delete(netns);
      throw new Error(`cannot start guest ${options.name}: ${errorText(error)}`);
    }

    const guest = new Guest(
      options.name,
      netns,
      address,
      hostAddress,
      hostLink,
      image,
      mountPoint,
      bankWorkers > 0 ? join(mountPoint, 'bank.db') : null,
      runDir,
      subnet,
      child,
    );
    live.mainPid = () => (guest.exited ? null : guest.mainPid);

    const config: GuestConfig = {
      name: options.name,
      netns,
      image,
      mountPoint,
      runDir,
      hostMountNamespace: readlinkSync('/proc/self/ns/mnt'),
      address,
      hostAddress,
      bankWorkers,
      command: options.command ?? null,
      env: options.env ?? {},
      files: options.files ?? {},
      commandReady: options.commandReady?.source ?? null,
      commandReadyTimeoutMs: 20_000,
    };
    try {
      await guest.configure(config, options.timeoutMs ?? 45_000);
    } catch (error) {
      await guest.stop().catch(() => {});
      await guest.releaseSubnet();
      const output = `${guest.stdout.slice(-2000)}${guest.stderr.slice(-2000)}`.trim();
      throw new Error(`${errorText(error)}${output === '' ? '' : `\n--- guest output ---\n${output}`}`);
    }
    return guest;
  }

  /** Sends guest-main its config and waits until it is ready (its disk mounted, the bank and command started). */
  private configure(config: GuestConfig, timeoutMs: number): Promise<void> {
    const child = this.child;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`guest ${config.name} was not ready within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onMessage = (message: GuestMessage): void => {
        if (message.type === 'ready') {
          clearTimeout(timer);
          this.commandPidNow = message.commandPid;
          resolve();
        } else if (message.type === 'failed') {
          clearTimeout(timer);
          reject(new Error(`guest ${config.name} failed to start: ${message.error}`));
        }
      };
      child.on('message', onMessage);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`guest ${config.name} exited with ${signal ?? code} while starting`));
      });
      child.once('spawn', () => child.send({ type: 'config', config }));
    });
  }

  private onMessage(message: GuestMessage): void {
    switch (message.type) {
      case 'command-start':
        this.commandPidNow = message.pid;
        break;
      case 'command-exit':
        if (this.commandPidNow === message.pid) this.commandPidNow = null;
        break;
      case 'reply': {
        const pending = this.pending.get(message.id);
        if (pending === undefined) return;
        this.pending.delete(message.id);
        if (message.ok) pending.resolve(message.result);
        else pending.reject(new Error(`guest ${this.name}: ${message.error}`));
        break;
      }
      default:
        break;
    }
  }

  private request<T>(op: GuestRequest['op'], extra: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (this.exited || !this.child.connected) return Promise.reject(new Error(`guest ${this.name} is not running`));
    const id = this.nextRequest++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`guest ${this.name} did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.child.send({ type: 'request', id, op, ...extra });
    });
  }

  commandPid(): number | null {
    return this.commandPidNow;
  }

  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (this.exited) throw new Error(`guest ${this.name} is not running`);
    const args = ['--target', String(this.mainPid), '--mount', '--net'];
    if (options.cwd !== undefined) args.push(`--wdns=${options.cwd}`);
    const env = {
      ...ENV,
      GUEST_NAME: this.name,
      GUEST_NETNS: this.netns,
      GUEST_ADDRESS: this.address,
      GUEST_HOST_ADDRESS: this.hostAddress,
      GUEST_MOUNT: this.mountPoint,
      ...options.env,
    };
    // Its own process group, so that a timeout kills what it started too.
    const child = spawn('nsenter', [...args, '--', ...argv], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c: number | null, s: NodeJS.Signals | null) => resolve([c, s]));
    });
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([closed, timedOut]);
    clearTimeout(timer);
    if (first !== 'timeout') return { stdout, stderr, code: first[0], signal: first[1], timedOut: false };
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
    // A process blocked on a frozen disk cannot die before the thaw: answer without waiting for
    // it (stop() kills what is left in the guest, after thawing).
    const late = await withTimeout(closed, 500).catch(() => null);
    if (late === null) {
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
    }
    return { stdout, stderr, code: null, signal: 'SIGKILL', timedOut: true };
  }

  killCommand(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: string | null } | null> {
    return this.request('kill-command', { signal });
  }

  restartCommand(): Promise<number> {
    return this.request('restart-command');
  }

  async linkDown(): Promise<void> {
    await run('ip', ['link', 'set', this.hostLink, 'down']);
  }

  async linkUp(): Promise<void> {
    await run('ip', ['link', 'set', this.hostLink, 'up']);
    // Up means: carrier on the host end and the connected route back in the host's table.
    await waitFor(`the link to guest ${this.name} to come up`, 10_000, async () => {
      const link = (await run('ip', ['-o', 'link', 'show', 'dev', this.hostLink])).stdout;
      if (!link.includes('LOWER_UP')) return false;
      const route = (await run('ip', ['-o', 'route', 'get', this.address]).catch(() => ({ stdout: '' }))).stdout;
      return route.includes(`dev ${this.hostLink}`) && !route.includes('linkdown');
    });
  }

  bankProgress(): Promise<number> {
    return this.request('bank-progress');
  }

  stopBank(): Promise<WorkerStats[]> {
    return this.request('stop-bank');
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const problems: string[] = [];
    if (!this.exited) {
      try {
        await this.request('stop', {}, 30_000);
        await withTimeout(this.exitedPromise, 10_000).catch(() => {});
      } catch (error) {
        problems.push(`stopping: ${errorText(error)}`);
      }
      if (!this.exited) {
        await this.thaw();
        this.child.kill('SIGKILL');
        await this.exitedPromise;
      }
    }
    // Whatever is left in the namespace (the command if guest-main crashed, exec'd programs).
    await this.killNetnsProcesses().catch((error: unknown) => problems.push(errorText(error)));
    await run('ip', ['link', 'del', this.hostLink]).catch(() => {});
    await run('ip', ['netns', 'del', this.netns]).catch(() => {});
    // The disk's loop device autoclears once its last mount goes; wait for it.
    try {
      await waitFor(
        `the loop device of ${this.image} to detach`,
        3000,
        async () => (await loopDevicesOf(this.image)).length === 0,
      );
    } catch {
      // A disk frozen when its namespace died stays frozen, unmounted, holding its loop device:
      // mount the device again (that finds the same superblock), thaw it, unmount it.
      for (const device of await loopDevicesOf(this.image)) await rescueFrozenLoop(device);
      try {
        await waitFor(
          `the loop device of ${this.image} to detach`,
          3000,
          async () => (await loopDevicesOf(this.image)).length === 0,
        );
      } catch (error) {
        problems.push(errorText(error));
      }
    }
    await rm(this.runDir, { recursive: true, force: true });
    liveGuests.delete(this.netns);
    this.stopped = true;
    if (problems.length > 0)
      throw new Error(`guest ${this.name}: ${problems.join('; ')}\n--- guest stderr ---\n${this.err.slice(-2000)}`);
  }

  /** The processes in the guest's network namespace (all of the guest's, and programs exec'd in it). */
  private async netnsPids(): Promise<number[]> {
    const { stdout } = await run('ip', ['netns', 'pids', this.netns]).catch(() => ({ stdout: '' }));
    return stdout.split(/\s+/).filter(Boolean).map(Number);
  }

  /** Thaws the disk, in case a test left it frozen: a process writing to a frozen disk cannot be
   * killed. The disk is mounted in the guest's mount namespace only; /proc/<pid>/root of any
   * process in that namespace reaches it (guest-main's, or any other if guest-main died). */
  private async thaw(): Promise<void> {
    for (const pid of [...(this.exited ? [] : [this.mainPid]), ...(await this.netnsPids())]) {
      try {
        await run('fsfreeze', ['-u', `/proc/${pid}/root${this.mountPoint}`]);
        return;
      } catch (error) {
        if (errorText(error).includes('Invalid argument')) return; // mounted, not frozen
      }
    }
  }

  /** Gives the guest's addresses back (its fallback route goes with them); after stop() only. */
  async releaseSubnet(): Promise<void> {
    await releaseSubnet(this.subnet);
  }

  private async killNetnsProcesses(): Promise<void> {
    const first = await this.netnsPids();
    if (first.length === 0) return;
    await this.thaw();
    for (const pid of first) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await waitFor(
      `the processes of guest ${this.name} to die`,
      5000,
      async () => (await this.netnsPids()).length === 0,
    );
  }
}
