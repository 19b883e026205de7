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
  type PostSnapshotRequest,
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
import { createNoopEndpoint } from '../sdk/index.ts';

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
        readableAfterThaw: false,
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
  const writer = new GuestWriter(options, options.agent);
  // A plain object of bound calls, so the endpoint may be spread or its calls passed around.
  return {
    identify: (callOptions) => writer.identify(callOptions),
    status: (callOptions) => writer.status(callOptions),
    prepareBackup: (request, callOptions) => writer.prepareBackup(request, callOptions),
    prepareSnapshot: (request, callOptions) => writer.prepareSnapshot(request, callOptions),
    freeze: (request, callOptions) => writer.freeze(request, callOptions),
    thaw: (request, callOptions) => writer.thaw(request, callOptions),
    postSnapshot: (request, callOptions) => writer.postSnapshot(request, callOptions),
    backupComplete: (request, callOptions) => writer.backupComplete(request, callOptions),
    abort: (request, callOptions) => writer.abort(request, callOptions),
    shutdown: (request, callOptions) => writer.shutdown(request, callOptions),
    preRestore: async () => undefined,
    postRestore: async () => undefined,
    openSession: (request) => writer.openSession(request),
    guestReport: () => writer.guestReport(),
    close: () => writer.close(),
  };
}

/** One guest's writer: the agent, the session that ties the guest's set to ours, and the set's report as it stands. */
class GuestWriter {
  readonly #agent: GuestAgent;
  readonly #name: string;
  readonly #honorFull: boolean;
  readonly #metadata: WriterMetadata;
  #lost: AbortSignal | undefined;
  #setId: string | null = null;
  /** The set this guest is in, from its session or prepare-backup to its shutdown: another one is refused. */
  #openSet: string | null = null;
  #frozenAtEpoch: number | null = null;
  #report: GuestReport | null = null;
  #failure: Failure | null = null;

  constructor(options: GuestWriterOptions, agent: GuestAgent) {
    this.#agent = agent;
    this.#name = options.name;
    this.#honorFull = options.honorFull;
    this.#metadata = guestMetadata(options, 'quiesce.guest', agent.address);
  }

  async identify(callOptions?: CallOptions): Promise<WriterMetadata> {
    await this.#call('identify', () => this.#agent.identify(callOptions));
    return this.#metadata;
  }

  async status(callOptions?: CallOptions): Promise<WriterStatus> {
    const inner = await this.#call('identify', () => this.#agent.status(callOptions));
    return { ...inner, metadata: this.#metadata };
  }

  async prepareBackup(request: PrepareBackupRequest, callOptions?: CallOptions): Promise<PrepareBackupResponse> {
    this.#refuseAnotherSet(request.setId);
    this.#openSet = request.setId;
    this.#setId = request.setId;
    this.#report = null;
    this.#failure = null;
    this.#frozenAtEpoch = null;
    const backupType = this.#guestType(request.backupType);
    await this.#call('prepare-backup', () =>
      this.#agent.prepareBackup({ setId: request.setId, backupType, components: [] }, this.#withSession(callOptions)),
    );
    return {
      components: [
        backupType === request.backupType
          ? { component: GUEST_DISKS_COMPONENT, actualType: backupType }
          : {
              component: GUEST_DISKS_COMPONENT,
              actualType: backupType,
              typeReason: 'policy',
              typeMessage: `guest ${this.#name} has honorFull: false: a full backup of the host is a copy for it`,
            },
      ],
    };
  }

  async prepareSnapshot(request: SetRequest, callOptions?: CallOptions): Promise<void> {
    try {
      await this.#call('prepare-snapshot', () => this.#agent.prepareSnapshot(request, this.#withSession(callOptions)));
      this.#frozenAtEpoch = Date.now();
    } finally {
      await this.#fetchReport(request.setId);
    }
  }

  async freeze(request: FreezeRequest, callOptions?: CallOptions): Promise<void> {
    await this.#call('freeze', () => this.#agent.freeze(request, this.#withSession(callOptions)));
  }

  async thaw(request: SetRequest, callOptions?: CallOptions): Promise<ThawResponse> {
    try {
      return await this.#call('thaw', () => this.#agent.thaw(request, this.#withSession(callOptions)));
    } finally {
      await this.#fetchReport(request.setId);
    }
  }

  async postSnapshot(request: PostSnapshotRequest, callOptions?: CallOptions): Promise<PostSnapshotResponse> {
    await this.#call('post-snapshot', () => this.#agent.postSnapshot(request, this.#withSession(callOptions)));
    // The host reads the images whole (or by their changed chunks): no stamp, no ranges.
    return { components: [] };
  }

  async backupComplete(request: BackupCompleteRequest, callOptions?: CallOptions): Promise<void> {
    const guestRequest = { ...request, backupType: this.#guestType(request.backupType) };
    await this.#call('backup-complete', () => this.#agent.backupComplete(guestRequest, this.#withSession(callOptions)));
  }

  async abort(request: SetRequest, callOptions?: CallOptions): Promise<void> {
    await this.#call('abort', () => this.#agent.abort(request, callOptions));
  }

  async shutdown(request: SetRequest, callOptions?: CallOptions): Promise<void> {
    if (this.#openSet !== null && this.#openSet !== request.setId) return; // a refused set: nothing of it here
    try {
      await this.#agent.shutdown(request, callOptions);
    } catch {
      // Shutdown never fails; an agent we cannot reach ends its set through the lost session.
    }
    await this.#fetchReport(request.setId);
    this.#openSet = null;
  }

  async openSession(request: SetRequest): Promise<WriterSession> {
    this.#refuseAnotherSet(request.setId);
    const session = await this.#call('identify', () => this.#agent.openSession(request));
    this.#openSet = request.setId;
    this.#lost = session.lost;
    const ended = () => {
      if (this.#openSet === request.setId) this.#openSet = null;
    };
    session.lost?.addEventListener('abort', ended);
    const close = session.close.bind(session);
    return Object.assign(session, {
      close: async () => {
        try {
          await close();
        } finally {
          ended();
        }
      },
    });
  }

  /** A second set while one is open is refused (retryable) before it touches the first one's state. */
  #refuseAnotherSet(setId: string): void {
    if (this.#openSet === null || this.#openSet === setId) return;
    throw new QuiesceError('retryable', `guest ${this.#name} is in set ${this.#openSet}; try again when it has ended`, {
      writer: this.#name,
    });
  }

  guestReport(): GuestReport | null {
    if (this.#setId === null) return null;
    if (this.#report) return { ...this.#report, error: this.#report.error ?? this.#failure };
    return {
      name: this.#name,
      agent: 'quiesce',
      consistency: 'crash',
      status: this.#failure ? 'partial' : 'succeeded',
      error: this.#failure,
      message: this.#failure
        ? `the agent at ${this.#agent.address} could not be reached for the guest's own report`
        : null,
      frozenAtMs: this.#frozenAtEpoch,
      freezeWindowMs: null,
      components: [],
      writers: [],
      guests: [],
    };
  }

  close(): Promise<void> {
    return this.#agent.close();
  }

  /** Every call also ends when the guest's session is lost (agent killed, network cut). */
  #withSession(callOptions: CallOptions = {}): CallOptions {
    const signals = [callOptions.signal, this.#lost].filter((s): s is AbortSignal => s !== undefined);
    return signals.length === 0 ? {} : { signal: AbortSignal.any(signals) };
  }

  async #call<T>(phase: NonNullable<Failure['phase']>, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      throw this.#fromGuest(error, phase);
    }
  }

  /** An agent's failure, as this host reports it: the guest named, the inner writer kept in the message. */
  #fromGuest(error: unknown, phase: NonNullable<Failure['phase']>): QuiesceError {
    const name = this.#name;
    const raw = QuiesceError.from(error, 'nonretryable', { phase });
    const lostReason: unknown = this.#lost?.aborted ? this.#lost.reason : undefined;
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
    this.#failure ??= out.toJSON();
    return out;
  }

  async #fetchReport(id: string): Promise<void> {
    try {
      const fetched = await this.#agent.report({ setId: id }, { signal: AbortSignal.timeout(10_000) });
      // The host's clock, not the guest's, says when the guest was frozen.
      this.#report = { ...fetched, frozenAtMs: this.#frozenAtEpoch };
    } catch {
      // Unreachable now: the last report fetched, or the failure, stands.
    }
  }

  #guestType(type: BackupType): BackupType {
    return type === 'full' && !this.#honorFull ? 'copy' : type;
  }
}

/**
 * A guest with no agent: its images are taken as they are, crash-consistent like a power cut,
 * and the report says so. Give it the policy `off`: there is nothing to quiesce.
 */
function createAgentlessGuestWriter(options: GuestWriterOptions): WriterEndpoint {
  let seen = false;
  return {
    ...createNoopEndpoint(guestMetadata(options, 'quiesce.guest', 'no agent')),
    prepareBackup: async (request) => {
      seen = true;
      return { components: [{ component: GUEST_DISKS_COMPONENT, actualType: request.backupType }] };
    },
    thaw: async () => ({ selfThawed: false, frozenMs: 0, consistency: 'crash' }),
    guestReport: () => (seen ? agentlessReport(options.name) : null),
  };
}

function agentlessReport(name: string): GuestReport {
  return {
    name,
    agent: 'none',
    consistency: 'crash',
    status: 'succeeded',
    error: null,
    message:
      'no agent in this guest: its disks were taken with no quiesce, at best crash-consistent (like a power cut) where the host snapshots them atomically; install the quiesce agent (or the QEMU guest agent) for more',
    frozenAtMs: null,
    freezeWindowMs: null,
    components: [],
    writers: [],
    guests: [],
  };
}
