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
import { DEFAULT_QGA_TIMEOUT_MS, QgaClient, isErrorAnswer } from './qga-client.ts';

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
  const { name, socket, mountpoints } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_QGA_TIMEOUT_MS;
  const badConfig = (why: string): QuiesceError =>
    new QuiesceError('bad-config', `qga writer ${name}: ${why}`, { writer: name });
  if (!isAbsolute(socket)) throw badConfig(`the socket ${socket} is not an absolute path`);
  if (options.disks.length === 0)
    throw badConfig("give the guest's disk image files in `disks`: they are what the host snapshots");
  for (const disk of options.disks) if (!isAbsolute(disk)) throw badConfig(`the disk ${disk} is not an absolute path`);
  if (mountpoints !== undefined) {
    if (mountpoints.length === 0)
      throw badConfig('`mountpoints` is empty: leave it out to freeze every file system of the guest, or name some');
    for (const mountpoint of mountpoints)
      if (!mountpoint.startsWith('/'))
        throw badConfig(`the mount point ${mountpoint} is not an absolute path in the guest`);
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
    throw badConfig(`timeoutMs must be a positive whole number of milliseconds, not ${timeoutMs}`);

  const parsed = WriterMetadataSchema.safeParse({
    name,
    classId: 'quiesce.qga',
    instanceId: socket,
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
  if (!parsed.success)
    throw badConfig(parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; '));
  const metadata: WriterMetadata = parsed.data;

  const what = mountpoints ? `the guest's file systems at ${mountpoints.join(', ')}` : "the guest's file systems";
  /** Connections in use, closed at close(). */
  const open = new Set<QgaClient>();
  /** How many file systems this set's freeze froze; null when this set has not frozen. */
  let frozenCount: number | null = null;
  /** A freeze went out in this set and no thaw has been confirmed since: abort must check. */
  let mayBeFrozen = false;

  async function withClient<T>(signal: AbortSignal, body: (client: QgaClient) => Promise<T>): Promise<T> {
    const client = await QgaClient.connect(socket, { timeoutMs, signal });
    open.add(client);
    try {
      return await body(client);
    } finally {
      open.delete(client);
      await client.close();
    }
  }

  /** The agent's error with this writer and phase filled in. */
  function named(error: unknown, phase: 'prepare-snapshot' | 'freeze' | 'thaw' | 'abort'): QuiesceError {
    return QuiesceError.from(error, 'nonretryable', { writer: name, phase, component: 'disks' });
  }

  async function thawOnce(signal: AbortSignal): Promise<number> {
    return withClient(signal, async (client) => {
      const thawed = await client.thaw({ signal });
      const status = await client.status({ signal });
      if (status !== 'thawed') {
        throw new QuiesceError(
          'nonretryable',
          `qemu-ga on ${socket} still says the guest is ${status} after guest-fsfreeze-thaw: the guest's file systems may be frozen. Thaw them now (guest-fsfreeze-thaw, virsh domfsthaw ${name}, or fsfreeze -u in the guest)`,
          { writer: name, phase: 'thaw', component: 'disks' },
        );
      }
      return thawed;
    });
  }

  /** Thaws, retrying on a fresh connection: a guest left frozen is the worst outcome there is. */
  async function thawGuest(signal: AbortSignal): Promise<number> {
    let last: unknown;
    for (let attempt = 1; attempt <= THAW_ATTEMPTS; attempt++) {
      try {
        const thawed = await thawOnce(signal);
        mayBeFrozen = false;
        return thawed;
      } catch (error) {
        last = error;
        const retry = error instanceof QuiesceError && error.code === 'not-responding' && !signal.aborted;
        if (!retry) break;
      }
    }
    const error = named(last, 'thaw');
    throw new QuiesceError(
      error.code,
      `${error.message}. The guest may still be frozen: thaw it as soon as the agent answers (guest-fsfreeze-thaw, virsh domfsthaw ${name})`,
      { writer: name, phase: 'thaw', component: 'disks', cause: error },
    );
  }

  return {
    metadata,
    level: 'filesystem',

    async prepareSnapshot(context: HandlerContext): Promise<void> {
      frozenCount = null;
      mayBeFrozen = false;
      try {
        await withClient(context.signal, async (client) => {
          await client.ping({ signal: context.signal });
          const status = await client.status({ signal: context.signal });
          if (status === 'frozen') {
            throw new QuiesceError(
              'retryable',
              `qemu-ga on ${socket} says guest ${name} is frozen already: another backup (or virsh domfsfreeze) holds it, or an earlier one died without thawing. ` +
                `Retry when it is thawed; if nothing holds it any more, thaw it (guest-fsfreeze-thaw, virsh domfsthaw ${name})`,
            );
          }
        });
      } catch (error) {
        throw named(error, 'prepare-snapshot');
      }
    },

    async freeze(context: HandlerContext): Promise<void> {
      let count: number;
      try {
        count = await withClient(context.signal, async (client) => {
          mayBeFrozen = true;
          try {
            return await client.freeze(mountpoints, { signal: context.signal });
          } catch (error) {
            if (!isErrorAnswer(error) && client.answerLost) {
              // The freeze went out and no answer we can trust came back: the agent may still run
              // it. Queue a thaw right behind it on this connection (abort checks the status later).
              client.queueThaw();
            } else {
              // The agent refused it and thawed whatever it had frozen (or it is someone else's
              // freeze), or it was never sent.
              mayBeFrozen = false;
            }
            throw error;
          }
        });
      } catch (error) {
        throw named(error, 'freeze');
      }
      if (count === 0) {
        mayBeFrozen = false;
        throw new QuiesceError(
          'nonretryable',
          mountpoints
            ? `qemu-ga on ${socket} froze no file system of guest ${name}: none of ${mountpoints.join(', ')} is a mounted, freezable file system in the guest (or it is frozen already by someone else). Check \`mountpoints\` against the guest's /proc/mounts`
            : `qemu-ga on ${socket} froze no file system of guest ${name}: it has none that can be frozen; its disks can only be taken crash-consistent`,
          { writer: name, phase: 'freeze', component: 'disks' },
        );
      }
      frozenCount = count;
    },

    async thaw(context: HandlerContext): Promise<void> {
      const froze = frozenCount;
      frozenCount = null;
      const thawed = await thawGuest(context.signal);
      if (froze !== null && thawed < froze) {
        throw new QuiesceError(
          'retryable',
          `qemu-ga on ${socket} thawed ${thawed} file system(s) of guest ${name} but had frozen ${froze}: something else thawed ${what} during the snapshot (another qemu-ga client, or fsfreeze -u in the guest), so the snapshot is only crash-consistent. Run the backup again`,
          { writer: name, phase: 'thaw', component: 'disks' },
        );
      }
    },

    async abort(context: HandlerContext): Promise<void> {
      frozenCount = null;
      if (!mayBeFrozen) return; // This set never froze the guest: a freeze of someone else's is not ours to undo.
      try {
        const status = await withClient(context.signal, (client) => client.status({ signal: context.signal }));
        if (status === 'thawed') {
          mayBeFrozen = false;
          return;
        }
      } catch (error) {
        throw named(error, 'abort');
      }
      try {
        await thawGuest(context.signal);
      } catch (error) {
        throw named(error, 'abort');
      }
    },

    async shutdown(): Promise<void> {
      frozenCount = null;
      await closeAll();
    },

    async close(): Promise<void> {
      await closeAll();
    },
  };

  async function closeAll(): Promise<void> {
    await Promise.all([...open].map((client) => client.close()));
    open.clear();
  }
}
