/**
 * The host's writer for one guest: its component is the guest's disk images on the host's
 * volumes, and its phases drive the guest's own set through the guest's agent. The guest
 * freezes (writers, then file systems) during the host's prepare-snapshot, in parallel with
 * every other guest; the host's freeze only confirms it still holds; the host commits; the
 * host's thaw thaws it. The guest's own report comes back nested in the host's.
 */
import {
  BACKUP_TYPES,
  QuiesceError,
  type BackupCompleteRequest,
  type BackupType,
  type CallOptions,
  type Failure,
  type FreezeRequest,
  type GuestReport,
  type PostSnapshotResponse,
  type PrepareBackupRequest,
  type PrepareBackupResponse,
  type SetRequest,
  type ThawResponse,
  type WriterEndpoint,
  type WriterMetadata,
  type WriterSession,
  type WriterStatus,
} from '../../model/index.ts';

/** What the guest writer needs of an agent connection (rpc's `connectAgent` gives it). */
export interface GuestAgent extends WriterEndpoint {
  readonly address: string;
  report(request: SetRequest, options?: CallOptions): Promise<GuestReport>;
  openSession(request: SetRequest): Promise<WriterSession & { readonly lost?: AbortSignal }>;
}

export interface GuestWriterOptions {
  /** The guest's name on this host. */
  name: string;
  /** The guest's disk image files on this host. */
  disks: string[];
  /** The guest's agent, or null: a guest with no agent is taken crash-consistent. */
  agent: GuestAgent | null;
  /** False: a `full` asked of this host becomes `copy` for the guest (the guest's own chain stays). */
  honorFull: boolean;
}

/** The component every guest writer has: the guest's disk images. */
export const GUEST_DISKS_COMPONENT = 'disks';

export function guestMetadata(
  options: Pick<GuestWriterOptions, 'name' | 'disks'>,
  classId: string,
  instanceId: string,
): WriterMetadata {
  return {
    name: options.name,
    classId,
    instanceId,
    usage: 'back-end',
    components: [
      {
        name: GUEST_DISKS_COMPONENT,
        logicalPath: '',
        kind: 'files',
        selectable: true,
        files: options.disks.map((path) => ({ path, pattern: '*', recursive: false, isLog: false })),
      },
    ],
    backupTypes: [...BACKUP_TYPES],
    restoreMethod: 'restore-if-can-replace',
  };
}

/**
 * The writer for a guest with an agent.
 *
 * @example
 * const agent = connectAgent('tls://10.0.0.5:7443', { identity, pinned, callTimeoutMs: 60_000 });
 * const writer = createGuestWriter({ name: 'vm1', disks: ['/var/lib/vms/vm1.img'], agent, honorFull: true });
 */
export function createGuestWriter(options: GuestWriterOptions): WriterEndpoint {
  if (options.agent === null) return createAgentlessGuestWriter(options);
  const agent = options.agent;
  const { name } = options;
  const metadata = guestMetadata(options, 'quiesce.guest', agent.address);
  let lost: AbortSignal | undefined;
  let setId: string | null = null;
  let frozenAtEpoch: number | null = null;
  let report: GuestReport | null = null;
  let failure: Failure | null = null;

  /** Every call also ends when the guest's session is lost (agent killed, network cut). */
  const withSession = (callOptions: CallOptions = {}): CallOptions => {
    const signals = [callOptions.signal, lost].filter((s): s is AbortSignal => s !== undefined);
    return signals.length === 0 ? {} : { signal: AbortSignal.any(signals) };
  };

  /** An agent's failure, as this host reports it: the guest named, the inner writer kept in the message. */
  const fromGuest = (error: unknown, phase: NonNullable<Failure['phase']>): QuiesceError => {
    const raw = QuiesceError.from(error, 'nonretryable', { phase });
    const lostReason: unknown = lost?.aborted ? lost.reason : undefined;
    const cause = lostReason instanceof QuiesceError ? lostReason : raw;
    const inner = cause.writer && cause.writer !== name ? ` (writer ${cause.writer} inside the guest)` : '';
    const message = cause.message.startsWith(`guest ${name}`)
      ? cause.message
      : `guest ${name}${inner}: ${cause.message}`;
    const out = new QuiesceError(cause.code, message, {
      phase: cause.phase ?? phase,
      writer: name,
      component: GUEST_DISKS_COMPONENT,
      cause: error,
    });
    failure ??= out.toJSON();
    return out;
  };

  async function call<T>(phase: NonNullable<Failure['phase']>, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      throw fromGuest(error, phase);
    }
  }

  async function fetchReport(id: string): Promise<void> {
    try {
      const fetched = await agent.report({ setId: id }, { signal: AbortSignal.timeout(10_000) });
      // The host's clock, not the guest's, says when the guest was frozen.
      report = { ...fetched, frozenAtMs: frozenAtEpoch };
    } catch {
      // Unreachable now: the last report fetched, or the failure, stands.
    }
  }

  function guestType(type: BackupType): BackupType {
    return type === 'full' && !options.honorFull ? 'copy' : type;
  }

  return {
    async identify(callOptions) {
      await call('identify', () => agent.identify(callOptions));
      return metadata;
    },
    async status(callOptions): Promise<WriterStatus> {
      const inner = await call('identify', () => agent.status(callOptions));
      return { ...inner, metadata };
    },
    async prepareBackup(request: PrepareBackupRequest, callOptions): Promise<PrepareBackupResponse> {
      setId = request.setId;
      report = null;
      failure = null;
      frozenAtEpoch = null;
      const backupType = guestType(request.backupType);
      await call('prepare-backup', () =>
        agent.prepareBackup({ setId: request.setId, backupType, components: [] }, withSession(callOptions)),
      );
      return {
        components: [
          backupType === request.backupType
            ? { component: GUEST_DISKS_COMPONENT, actualType: backupType }
            : {
                component: GUEST_DISKS_COMPONENT,
                actualType: backupType,
                typeReason: 'policy',
                typeMessage: `guest ${name} has honorFull: false: a full backup of the host is a copy for it`,
              },
        ],
      };
    },
    async prepareSnapshot(request: SetRequest, callOptions): Promise<void> {
      try {
        await call('prepare-snapshot', () => agent.prepareSnapshot(request, withSession(callOptions)));
        frozenAtEpoch = Date.now();
      } finally {
        await fetchReport(request.setId);
      }
    },
    async freeze(request: FreezeRequest, callOptions): Promise<void> {
      await call('freeze', () => agent.freeze(request, withSession(callOptions)));
    },
    async thaw(request: SetRequest, callOptions): Promise<ThawResponse> {
      try {
        return await call('thaw', () => agent.thaw(request, withSession(callOptions)));
      } finally {
        await fetchReport(request.setId);
      }
    },
    async postSnapshot(request, callOptions): Promise<PostSnapshotResponse> {
      await call('post-snapshot', () => agent.postSnapshot(request, withSession(callOptions)));
      // The host reads the images whole (or by their changed chunks): no stamp, no ranges.
      return { components: [] };
    },
    async backupComplete(request: BackupCompleteRequest, callOptions): Promise<void> {
      await call('backup-complete', () =>
        agent.backupComplete({ ...request, backupType: guestType(request.backupType) }, withSession(callOptions)),
      );
    },
    async abort(request: SetRequest, callOptions): Promise<void> {
      await call('abort', () => agent.abort(request, callOptions));
    },
    async shutdown(request: SetRequest, callOptions): Promise<void> {
      try {
        await agent.shutdown(request, callOptions);
      } catch {
        // Shutdown never fails; an agent we cannot reach ends its set through the lost session.
      }
      await fetchReport(request.setId);
    },
    preRestore: async () => undefined,
    postRestore: async () => undefined,
    async openSession(request: SetRequest): Promise<WriterSession> {
      const session = await call('identify', () => agent.openSession(request));
      lost = session.lost;
      return session;
    },
    guestReport(): GuestReport | null {
      if (setId === null) return null;
      if (report) return { ...report, error: report.error ?? failure };
      return {
        name,
        agent: 'quiesce',
        consistency: 'crash',
        status: failure ? 'partial' : 'succeeded',
        error: failure,
        message: failure ? `the agent at ${agent.address} could not be reached for the guest's own report` : null,
        frozenAtMs: frozenAtEpoch,
        freezeWindowMs: null,
        components: [],
        writers: [],
        guests: [],
      };
    },
    close: () => agent.close(),
  };
}

/**
 * A guest with no agent: its images are taken as they are, crash-consistent like a power cut,
 * and the report says so. Give it the policy `off`: there is nothing to quiesce.
 */
function createAgentlessGuestWriter(options: GuestWriterOptions): WriterEndpoint {
  const metadata = guestMetadata(options, 'quiesce.guest', 'no agent');
  let seen = false;
  return {
    identify: async () => metadata,
    status: async () => ({ metadata, state: 'stable', setId: null, lastFailure: null }),
    prepareBackup: async (request) => {
      seen = true;
      return { components: [{ component: GUEST_DISKS_COMPONENT, actualType: request.backupType }] };
    },
    prepareSnapshot: async () => undefined,
    freeze: async () => undefined,
    thaw: async () => ({ selfThawed: false, frozenMs: 0, consistency: 'crash' }),
    postSnapshot: async () => ({ components: [] }),
    backupComplete: async () => undefined,
    abort: async () => undefined,
    shutdown: async () => undefined,
    preRestore: async () => undefined,
    postRestore: async () => undefined,
    openSession: async () => ({ close: async () => undefined }),
    guestReport: () =>
      seen
        ? {
            name: options.name,
            agent: 'none',
            consistency: 'crash',
            status: 'succeeded',
            error: null,
            message:
              'no agent in this guest: its disks were taken crash-consistent, like a power cut; install the quiesce agent (or the QEMU guest agent) for more',
            frozenAtMs: null,
            freezeWindowMs: null,
            components: [],
            writers: [],
            guests: [],
          }
        : null,
    close: async () => undefined,
  };
}
