/**
 * The writer for a VM guest that runs the QEMU guest agent (qemu-ga) instead of a quiesce agent.
 * On the host it freezes the guest's file systems through qemu-ga's socket, the host's providers
 * snapshot the guest's disk image files (its one component, `disks`), and it thaws. The guest's
 * applications take no part, so what this writer reaches is `filesystem` consistency, never
 * `application` (the definition's `level`).
 *
 * Each phase opens its own connection to the agent and closes it when done: qemu-ga serves one
 * client at a time, and a connection held for the whole set would lock out every other client
 * (and our own checks) meanwhile. `guest-sync-delimited` makes each new connection safe.
 *
 * What each phase does:
 * - prepare-snapshot: ping (`not-responding` when the agent does not answer) and refuse a guest
 *   that is frozen already (`retryable`: someone else holds it).
 * - freeze: freeze the mount points given, or every freezable file system of the guest. Freezing
 *   none fails `nonretryable`. A freeze whose answer is lost (timeout, abort) gets a thaw queued
 *   behind it on the same connection, so the guest is thawed whenever the agent runs it.
 * - thaw: thaw (retried on a fresh connection while the deadline allows) and check the agent
 *   says `thawed`. Fewer thawed than frozen means something else thawed the guest during the
 *   snapshot: the snapshot cannot be vouched for, and thaw fails `retryable`.
 * - abort: thaw if this set may have frozen the guest and the agent says it is frozen; a guest
 *   frozen by someone else is never touched.
 *
 * @example
 * const runtime = createWriterRuntime(createQgaWriter({
 *   name: 'shop-vm',
 *   socket: '/run/qemu/shop-vm.qga.sock',
 *   disks: ['/var/lib/vms/shop-vm.qcow2'],
 *   mountpoints: ['/', '/srv'],
 * }));
 */
import { isAbsolute } from 'node:path';
import { QuiesceError, WriterMetadataSchema, type WriterMetadata } from '../../model/index.ts';
import type { HandlerContext, WriterDefinition } from '../sdk/definition.ts';
import { isErrorAnswer } from './qga-answers.ts';
import { DEFAULT_QGA_TIMEOUT_MS, QgaClient } from './qga-client.ts';

export interface QgaWriterOptions {
  /** The guest's name: the writer's name in reports. */
  name: string;
  /** qemu-ga's Unix socket on this host (the VM's guest-agent chardev, or `qemu-ga --method unix-listen`). */
  socket: string;
  /** The guest's disk image files on this host: what the host snapshots (the component `disks`). */
  disks: string[];
  /** Freeze only the file systems mounted here in the guest; default every freezable one. */
  mountpoints?: string[];
  /** The limit of each command to the agent, connecting included (default 10 000 ms). */
  timeoutMs?: number;
}

/** How many times thaw tries, each on a fresh connection, before it gives up. */
const THAW_ATTEMPTS = 3;

export function createQgaWriter(options: QgaWriterOptions): WriterDefinition {
  return new QgaWriter(options);
}

function badConfig(name: string, why: string): QuiesceError {
  return new QuiesceError('bad-config', `qga writer ${name}: ${why}`, { writer: name });
}

/** Throws `bad-config` for options no agent could serve: relative paths, no disks, no mount points, a bad limit. */
function checkOptions(options: QgaWriterOptions, timeoutMs: number): void {
  const { socket, mountpoints } = options;
  const refuse = (why: string): QuiesceError => badConfig(options.name, why);
  if (!isAbsolute(socket)) throw refuse(`the socket ${socket} is not an absolute path`);
  if (options.disks.length === 0)
    throw refuse("give the guest's disk image files in `disks`: they are what the host snapshots");
  for (const disk of options.disks) if (!isAbsolute(disk)) throw refuse(`the disk ${disk} is not an absolute path`);
  if (mountpoints !== undefined) {
    if (mountpoints.length === 0)
      throw refuse('`mountpoints` is empty: leave it out to freeze every file system of the guest, or name some');
    for (const mountpoint of mountpoints)
      if (!mountpoint.startsWith('/'))
        throw refuse(`the mount point ${mountpoint} is not an absolute path in the guest`);
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
    throw refuse(`timeoutMs must be a positive whole number of milliseconds, not ${timeoutMs}`);
}

/** The guest as a writer: one component, `disks`, the guest's disk image files on this host. */
function qgaMetadata(options: QgaWriterOptions): WriterMetadata {
  const parsed = WriterMetadataSchema.safeParse({
    name: options.name,
    classId: 'quiesce.qga',
    instanceId: options.socket,
    usage: 'system',
    components: [
      {
        name: 'disks',
        logicalPath: '',
        kind: 'files',
        selectable: true,
        files: options.disks.map((path) => ({ path, pattern: '*', recursive: false, isLog: false })),
      },
    ],
    backupTypes: ['full', 'copy', 'incremental', 'differential'],
    restoreMethod: 'restore-if-can-replace',
  });
  if (!parsed.success) {
    const why = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    throw badConfig(options.name, why);
  }
  return parsed.data;
}

/** One guest's writer: the connections in use, and what this set's freeze did to the guest. */
class QgaWriter implements WriterDefinition {
  readonly metadata: WriterMetadata;
  readonly level = 'filesystem';
  readonly #name: string;
  readonly #socket: string;
  readonly #mountpoints: string[] | undefined;
  readonly #timeoutMs: number;
  /** Connections in use, closed at close(). */
  readonly #open = new Set<QgaClient>();
  /** How many file systems this set's freeze froze; null when this set has not frozen. */
  #frozenCount: number | null = null;
  /** A freeze went out in this set and no thaw has been confirmed since: abort must check. */
  #mayBeFrozen = false;

  constructor(options: QgaWriterOptions) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QGA_TIMEOUT_MS;
    checkOptions(options, timeoutMs);
    this.metadata = qgaMetadata(options);
    this.#name = options.name;
    this.#socket = options.socket;
    this.#mountpoints = options.mountpoints;
    this.#timeoutMs = timeoutMs;
  }

  async prepareSnapshot(context: HandlerContext): Promise<void> {
    this.#frozenCount = null;
    this.#mayBeFrozen = false;
    try {
      await this.#withClient(context.signal, async (client) => {
        await client.ping({ signal: context.signal });
        const status = await client.status({ signal: context.signal });
        if (status === 'frozen') {
          throw new QuiesceError(
            'retryable',
            `qemu-ga on ${this.#socket} says guest ${this.#name} is frozen already: another backup (or virsh domfsfreeze) holds it, or an earlier one died without thawing. ` +
              `Retry when it is thawed; if nothing holds it any more, thaw it (guest-fsfreeze-thaw, virsh domfsthaw ${this.#name})`,
          );
        }
      });
    } catch (error) {
      throw this.#named(error, 'prepare-snapshot');
    }
  }

  async freeze(context: HandlerContext): Promise<void> {
    let count: number;
    try {
      count = await this.#withClient(context.signal, (client) => this.#freezeOn(client, context.signal));
    } catch (error) {
      throw this.#named(error, 'freeze');
    }
    if (count === 0) {
      this.#mayBeFrozen = false;
      const mountpoints = this.#mountpoints;
      throw new QuiesceError(
        'nonretryable',
        mountpoints
          ? `qemu-ga on ${this.#socket} froze no file system of guest ${this.#name}: none of ${mountpoints.join(', ')} is a mounted, freezable file system in the guest (or it is frozen already by someone else). Check \`mountpoints\` against the guest's /proc/mounts`
          : `qemu-ga on ${this.#socket} froze no file system of guest ${this.#name}: it has none that can be frozen; its disks can only be taken crash-consistent`,
        { writer: this.#name, phase: 'freeze', component: 'disks' },
      );
    }
    this.#frozenCount = count;
  }

  async thaw(context: HandlerContext): Promise<void> {
    const froze = this.#frozenCount;
    this.#frozenCount = null;
    const thawed = await this.#thawGuest(context.signal);
    if (froze !== null && thawed < froze) {
      const what = this.#mountpoints
        ? `the guest's file systems at ${this.#mountpoints.join(', ')}`
        : "the guest's file systems";
      throw new QuiesceError(
        'retryable',
        `qemu-ga on ${this.#socket} thawed ${thawed} file system(s) of guest ${this.#name} but had frozen ${froze}: something else thawed ${what} during the snapshot (another qemu-ga client, or fsfreeze -u in the guest), so the snapshot is only crash-consistent. Run the backup again`,
        { writer: this.#name, phase: 'thaw', component: 'disks' },
      );
    }
  }

  async abort(context: HandlerContext): Promise<void> {
    this.#frozenCount = null;
    if (!this.#mayBeFrozen) return; // This set never froze the guest: a freeze of someone else's is not ours to undo.
    try {
      const status = await this.#withClient(context.signal, (client) => client.status({ signal: context.signal }));
      if (status === 'thawed') {
        this.#mayBeFrozen = false;
        return;
      }
    } catch (error) {
      throw this.#named(error, 'abort');
    }
    try {
      await this.#thawGuest(context.signal);
    } catch (error) {
      throw this.#named(error, 'abort');
    }
  }

  async shutdown(): Promise<void> {
    this.#frozenCount = null;
    await this.#closeAll();
  }

  async close(): Promise<void> {
    await this.#closeAll();
  }

  async #withClient<T>(signal: AbortSignal, body: (client: QgaClient) => Promise<T>): Promise<T> {
    const client = await QgaClient.connect(this.#socket, { timeoutMs: this.#timeoutMs, signal });
    this.#open.add(client);
    try {
      return await body(client);
    } finally {
      this.#open.delete(client);
      await client.close();
    }
  }

  async #closeAll(): Promise<void> {
    await Promise.all([...this.#open].map((client) => client.close()));
    this.#open.clear();
  }

  /** The freeze on `client`; a freeze whose answer is lost gets a thaw queued right behind it. */
  async #freezeOn(client: QgaClient, signal: AbortSignal): Promise<number> {
    this.#mayBeFrozen = true;
    try {
      return await client.freeze(this.#mountpoints, { signal });
    } catch (error) {
      if (!isErrorAnswer(error) && client.answerLost) {
        // The freeze went out and no answer we can trust came back: the agent may still run
        // it. Queue a thaw right behind it on this connection (abort checks the status later).
        client.queueThaw();
      } else {
        // The agent refused it and thawed whatever it had frozen (or it is someone else's
        // freeze), or it was never sent.
        this.#mayBeFrozen = false;
      }
      throw error;
    }
  }

  /** The agent's error with this writer and phase filled in. */
  #named(error: unknown, phase: 'prepare-snapshot' | 'freeze' | 'thaw' | 'abort'): QuiesceError {
    return QuiesceError.from(error, 'nonretryable', { writer: this.#name, phase, component: 'disks' });
  }

  async #thawOnce(signal: AbortSignal): Promise<number> {
    return this.#withClient(signal, async (client) => {
      const thawed = await client.thaw({ signal });
      const status = await client.status({ signal });
      if (status !== 'thawed') {
        throw new QuiesceError(
          'nonretryable',
          `qemu-ga on ${this.#socket} still says the guest is ${status} after guest-fsfreeze-thaw: the guest's file systems may be frozen. Thaw them now (guest-fsfreeze-thaw, virsh domfsthaw ${this.#name}, or fsfreeze -u in the guest)`,
          { writer: this.#name, phase: 'thaw', component: 'disks' },
        );
      }
      return thawed;
    });
  }

  /** Thaws, retrying on a fresh connection: a guest left frozen is the worst outcome there is. */
  async #thawGuest(signal: AbortSignal): Promise<number> {
    let last: unknown;
    for (let attempt = 1; attempt <= THAW_ATTEMPTS; attempt++) {
      try {
        const thawed = await this.#thawOnce(signal);
        this.#mayBeFrozen = false;
        return thawed;
      } catch (error) {
        last = error;
        const retry = error instanceof QuiesceError && error.code === 'not-responding' && !signal.aborted;
        if (!retry) break;
      }
    }
    const error = this.#named(last, 'thaw');
    throw new QuiesceError(
      error.code,
      `${error.message}. The guest may still be frozen: thaw it as soon as the agent answers (guest-fsfreeze-thaw, virsh domfsthaw ${this.#name})`,
      { writer: this.#name, phase: 'thaw', component: 'disks', cause: error },
    );
  }
}
