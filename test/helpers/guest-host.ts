// Test "hosts" with "guests" that behave like VMs, without VMs, for the tests of recursive
// (host-to-guest) snapshot sets. The host volume is a loop file system (XFS or btrfs). Each guest
// is a process tree in its own network namespace (a veth link, host 10.213.<i>.1/30, guest
// 10.213.<i>.2/30) and its own private mount namespace, whose "disk" is an ext4 image file on the
// host volume, loop-mounted inside the guest's mount namespace only, with the bank (a SQLite
// application, src/cli/demo/bank.ts) writing in it and optionally a command (an agent) running.
// The guest's main process is test/fixtures/guest-main.ts; we talk to it over IPC.
//
// Needs root, iproute2 (`ip`), util-linux (`unshare`, `nsenter`, `losetup`, `mount`, `fsfreeze`)
// and mkfs.ext4; makeGuestHost answers { skip } with the reason when something is missing.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import { link, mkdir, mkdtemp, open, readFile, rm, rmdir, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { checkBank, type BankCheck, type WorkerStats } from '../../src/cli/demo/bank.ts';
import type { GuestConfig, GuestMessage, GuestRequest } from '../fixtures/guest-main.ts';
import { makeLoopFs, onPath, unmount, type LoopFs } from './loop-fs.ts';

const execFileAsync = promisify(execFile);
const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;
const ENV = { ...process.env, PATH };
const REPO = join(import.meta.dirname, '..', '..');
const GUEST_MAIN = join(REPO, 'test', 'fixtures', 'guest-main.ts');
/** Where guests mount their disks (inside their own namespaces) and where subnets are claimed. */
const RUN_BASE = '/run/quiesce-test-guests';
const SUBNET_LOCKS = join(RUN_BASE, 'subnets');

export type { BankCheck, WorkerStats };

export interface GuestHostOptions {
  fs: 'xfs' | 'btrfs';
  /** Size of the (sparse) host volume; default 4096 MiB. */
  sizeMiB?: number;
}

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

export interface GuestHost {
  fs: 'xfs' | 'btrfs';
  /** The host volume; guests' images are files in `volume.workDir`. */
  volume: LoopFs;
  guests: readonly TestGuest[];
  startGuest(options: StartGuestOptions): Promise<TestGuest>;
  /** Stops every guest and removes the host volume. Idempotent. */
  cleanup(): Promise<void>;
}

// --- best-effort cleanup when a test run dies half-way ---------------------------------------

interface LiveGuest {
  netns: string;
  hostLink: string;
  mountPoint: string;
  runDir: string;
  mainPid: () => number | null;
}
const liveGuests = new Map<string, LiveGuest>();
const liveVolumes = new Map<string, LoopFs>();
const liveImageMounts = new Map<string, { dir: string; device: string | null; tempDir: string }>();

function syncQuiet(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { env: ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return '';
  }
}

// Prepended, so that it runs before loop-fs.ts's handler removes the host volume under the guests.
process.prependOnceListener('exit', () => {
  for (const volume of liveVolumes.values()) syncQuiet('fsfreeze', ['-u', volume.mountPoint]);
  for (const guest of liveGuests.values()) {
    // Thaw first: a process writing to a frozen disk cannot be killed. The disk is mounted in the
    // guest's mount namespace only, reachable through /proc/<pid>/root of any process in it.
    const pids = syncQuiet('ip', ['netns', 'pids', guest.netns]).split(/\s+/).filter(Boolean);
    const main = guest.mainPid();
    // (Through each: after the first thaw the others fail harmlessly.)
    for (const pid of main === null ? pids : [String(main), ...pids])
      syncQuiet('fsfreeze', ['-u', `/proc/${pid}/root${guest.mountPoint}`]);
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    syncQuiet('ip', ['link', 'del', guest.hostLink]);
    syncQuiet('ip', ['netns', 'del', guest.netns]);
    rmSync(guest.runDir, { recursive: true, force: true });
  }
  for (const subnet of claimedSubnets.values()) releaseSubnetSync(subnet);
  // loop-fs.ts's own handler unmounts and detaches too, but leaves the (sparse, GBs) image behind.
  for (const volume of liveVolumes.values()) {
    syncQuiet('umount', ['-l', volume.mountPoint]);
    syncQuiet('losetup', ['-d', volume.device]);
    rmSync(dirname(volume.mountPoint), { recursive: true, force: true });
  }
  for (const dir of [SUBNET_LOCKS, RUN_BASE]) {
    try {
      rmdirSync(dir);
    } catch {
      // not empty: another test process's guests
    }
  }
  for (const mount of liveImageMounts.values()) {
    syncQuiet('umount', ['-l', mount.dir]);
    if (mount.device !== null) syncQuiet('losetup', ['-d', mount.device]);
    rmSync(mount.tempDir, { recursive: true, force: true });
  }
});

// --- small tools --------------------------------------------------------------------------------

function run(file: string, args: string[], timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { env: ENV, encoding: 'utf8', timeout: timeoutMs });
}

function errorText(error: unknown): string {
  if (error instanceof Error) {
    const stderr = (error as Error & { stderr?: unknown }).stderr;
    return typeof stderr === 'string' && stderr.trim() !== ''
      ? `${error.message.split('\n')[0]}: ${stderr.trim()}`
      : error.message;
  }
  return String(error);
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection after `ms` (whose timer never outlives it: no hanging test process). */
async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every `everyMs` until it answers true; rejects with `what` after `timeoutMs`. */
async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean> | boolean,
  everyMs = 25,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(everyMs);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Loop devices backed by `file`, or [] (losetup -j). */
export async function loopDevicesOf(file: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-j', file]).catch(() => ({ stdout: '' }));
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => line.slice(0, line.indexOf(':')));
}

// --- subnets: 10.213.<i>.0/30, claimed across processes with lock files --------------------------

interface Subnet {
  index: number;
  /** 10.213.<index>.0/30 */
  prefix: string;
  lock: string;
}

/** Subnets this process holds, released on exit if a test run dies half-way. */
const claimedSubnets = new Map<string, Subnet>();

/**
 * Each claimed subnet gets an `unreachable` route of the lowest priority, under the veth's own:
 * whenever the veth's route is gone (its host end is down, the guest is stopped) the host's
 * packets to the guest fail at once (EHOSTUNREACH) instead of following the default route out
 * of the machine, where a transparent proxy may even accept the connection.
 */
const FALLBACK_METRIC = '999999';

/** Claims a free i in 1..254: a lock file made atomically with link(2), holding our pid. */
async function claimSubnet(owner: string): Promise<Subnet> {
  const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show']);
  const used = new Set([...stdout.matchAll(/inet 10\.213\.(\d+)\./g)].map((m) => Number(m[1])));
  for (let index = 1; index <= 254; index++) {
    if (used.has(index)) continue;
    const lock = join(SUBNET_LOCKS, String(index));
    for (let attempt = 0; attempt < 3; attempt++) {
      await mkdir(SUBNET_LOCKS, { recursive: true });
      const draft = `${lock}.${process.pid}.${owner}`;
      await writeFile(draft, `${process.pid}\n`);
      try {
        await link(draft, lock);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const holder = Number((await readFile(lock, 'utf8').catch(() => '')).trim());
        if (holder > 0 && alive(holder)) break; // taken: next index
        await unlink(lock).catch(() => {}); // stale: its process died
        continue;
      } finally {
        await unlink(draft).catch(() => {});
      }
      const subnet = { index, prefix: `10.213.${index}.0/30`, lock };
      claimedSubnets.set(lock, subnet);
      try {
        // `replace`: a killed test process may have left its route behind.
        await run('ip', ['route', 'replace', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]);
      } catch (error) {
        await releaseSubnet(subnet);
        throw error;
      }
      return subnet;
    }
  }
  throw new Error('no free subnet in 10.213.0.0/16 for a test guest');
}

async function releaseSubnet(subnet: Subnet): Promise<void> {
  if (!claimedSubnets.delete(subnet.lock)) return;
  await run('ip', ['route', 'del', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]).catch(() => {});
  const holder = Number((await readFile(subnet.lock, 'utf8').catch(() => '')).trim());
  if (holder === process.pid) await unlink(subnet.lock).catch(() => {});
}

function releaseSubnetSync(subnet: Subnet): void {
  syncQuiet('ip', ['route', 'del', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]);
  try {
    if (Number(readFileSync(subnet.lock, 'utf8').trim()) === process.pid) unlinkSync(subnet.lock);
  } catch {
    // gone
  }
}

// --- the host -----------------------------------------------------------------------------------

let nextIndex = 0;

export async function makeGuestHost(options: GuestHostOptions): Promise<GuestHost | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: 'test guests need root (network and mount namespaces, loop devices)' };
  for (const command of ['ip', 'unshare', 'nsenter', 'mount', 'umount', 'losetup', 'fsfreeze', 'mkfs.ext4']) {
    if (!(await onPath(command))) return { skip: `${command} is not installed` };
  }
  try {
    await run('unshare', ['--net', '--mount', '--', 'true']);
  } catch (error) {
    return { skip: `cannot make network and mount namespaces: ${errorText(error)}` };
  }
  const volume = await makeLoopFs(options.fs, options.sizeMiB ?? 4096);
  if ('skip' in volume) return volume;
  liveVolumes.set(volume.mountPoint, volume);

  const guests: Guest[] = [];
  let cleaned: Promise<void> | null = null;
  const host: GuestHost = {
    fs: options.fs,
    volume,
    guests,
    async startGuest(guestOptions) {
      if (cleaned !== null) throw new Error('this guest host was cleaned up');
      if (!/^[a-z0-9][a-z0-9-]*$/i.test(guestOptions.name)) throw new Error(`bad guest name ${guestOptions.name}`);
      if (guests.some((g) => g.name === guestOptions.name && !g.stopped))
        throw new Error(`guest ${guestOptions.name} is running already`);
      const guest = await Guest.start(volume, guestOptions);
      guests.push(guest);
      return guest;
    },
    cleanup() {
      cleaned ??= (async () => {
        await run('fsfreeze', ['-u', volume.mountPoint]).catch(() => {}); // a test may have left it frozen
        const results = await Promise.allSettled(guests.map((g) => g.stop()));
        for (const guest of guests) await guest.releaseSubnet();
        await volume.cleanup();
        liveVolumes.delete(volume.mountPoint);
        await rmdir(SUBNET_LOCKS).catch(() => {});
        await rmdir(RUN_BASE).catch(() => {});
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed.length > 0) throw new Error(failed.map((r) => errorText(r.reason)).join('; '));
      })();
      return cleaned;
    },
  };
  return host;
}

// --- a guest ------------------------------------------------------------------------------------

class Guest implements TestGuest {
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
    const undo = async (): Promise<void> => {
      await run('ip', ['link', 'del', hostLink]).catch(() => {});
      await run('ip', ['netns', 'del', netns]).catch(() => {});
      await rm(runDir, { recursive: true, force: true });
      await releaseSubnet(subnet);
      liveGuests.delete(netns);
    };

    let child: ChildProcess;
    try {
      if (options.image === undefined) {
        const handle = await open(image, 'w');
        await handle.truncate((options.imageMiB ?? 1024) * 1024 * 1024);
        await handle.close();
        await run('mkfs.ext4', ['-q', '-F', image]);
      }
      await run('ip', ['netns', 'add', netns]);
      // The guest end is created inside the namespace directly, as eth0.
      await run('ip', ['link', 'add', hostLink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
      await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostLink]);
      await run('ip', ['link', 'set', hostLink, 'up']);
      await run('ip', ['-n', netns, 'addr', 'add', `${address}/30`, 'dev', 'eth0']);
      await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      await mkdir(runDir, { recursive: true });
      // `ip netns exec` and `unshare` both exec, so the IPC channel (fd 3) reaches guest-main.
      child = spawn(
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
    } catch (error) {
      await undo();
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
    const timeoutMs = options.timeoutMs ?? 45_000;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`guest ${options.name} was not ready within ${timeoutMs} ms`)),
          timeoutMs,
        );
        const onMessage = (message: GuestMessage): void => {
          if (message.type === 'ready') {
            clearTimeout(timer);
            guest.commandPidNow = message.commandPid;
            resolve();
          } else if (message.type === 'failed') {
            clearTimeout(timer);
            reject(new Error(`guest ${options.name} failed to start: ${message.error}`));
          }
        };
        child.on('message', onMessage);
        child.once('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`guest ${options.name} exited with ${signal ?? code} while starting`));
        });
        child.once('spawn', () => child.send({ type: 'config', config }));
      });
    } catch (error) {
      await guest.stop().catch(() => {});
      await guest.releaseSubnet();
      const output = `${guest.stdout.slice(-2000)}${guest.stderr.slice(-2000)}`.trim();
      throw new Error(`${errorText(error)}${output === '' ? '' : `\n--- guest output ---\n${output}`}`);
    }
    return guest;
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

async function rescueFrozenLoop(device: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-guest-rescue-'));
  try {
    await run('mount', [device, dir], 10_000);
    await run('fsfreeze', ['-u', dir]).catch(() => {});
    await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
  } catch {
    // best effort: the caller reports the device if it stays
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// --- images -------------------------------------------------------------------------------------

export interface MountedImage {
  /** Where the copy is mounted (read-write, so that ext4 replays its journal). */
  dir: string;
  device: string;
  /** Unmounts, detaches, deletes the copy. Idempotent. */
  cleanup(): Promise<void>;
}

/** Mounts a copy of a disk image (a restored or snapshotted one; the original is never touched). */
export async function mountImage(image: string): Promise<MountedImage> {
  const tempDir = await mkdtemp(join(tmpdir(), 'quiesce-guest-image-'));
  const copy = join(tempDir, 'image');
  const dir = join(tempDir, 'mnt');
  const entry = { dir, device: null as string | null, tempDir };
  liveImageMounts.set(tempDir, entry);
  let mounted = false;
  let cleaned: Promise<void> | null = null;
  const cleanup = (): Promise<void> => {
    cleaned ??= (async () => {
      if (mounted) await unmount(dir);
      if (entry.device !== null) await run('losetup', ['-d', entry.device]).catch(() => {});
      await rm(tempDir, { recursive: true, force: true });
      liveImageMounts.delete(tempDir);
    })();
    return cleaned;
  };
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', image, copy]);
    await mkdir(dir);
    entry.device = (await run('losetup', ['-f', '--show', copy])).stdout.trim();
    await run('mount', [entry.device, dir]);
    mounted = true;
    return { dir, device: entry.device, cleanup };
  } catch (error) {
    await cleanup();
    throw new Error(`cannot mount a copy of ${image}: ${errorText(error)}`);
  }
}

/** Checks the bank in a disk image (a stopped guest's, a restored or snapshotted one). */
export async function checkImageBank(image: string): Promise<BankCheck> {
  const mounted = await mountImage(image);
  try {
    const bank = join(mounted.dir, 'bank.db');
    if (!existsSync(bank)) throw new Error(`${image} has no bank.db`);
    return await checkBank(bank);
  } finally {
    await mounted.cleanup();
  }
}
