/**
 * The guest side of a recursive set: one guest, seen by its host as one writer. The host's
 * phases step the guest's own snapshot set (the coordinator's `runSnapshotSet`, with the
 * guest's writers), which runs in the background and waits at three gates:
 *
 *   host PrepareBackup    -> the guest's writers identify and negotiate; the set waits
 *   host PrepareSnapshot  -> they prepare and freeze, the file systems freeze; the set holds
 *   host Thaw             -> file systems and writers thaw; the set waits for the outcome
 *   host BackupComplete   -> the guest's writers get backup-complete; the set ends
 *
 * Abort, Shutdown, the end of the host's session, and the guest's own freeze deadline end the
 * set early: the coordinator's `finally` thaws and aborts everything inside the guest.
 */
import { hostname } from 'node:os';
import {
  runSnapshotSet,
  type SetWriter,
  type SnapshotSetOptions,
  type SnapshotView,
  type UseOutcome,
} from '../coordinator/index.ts';
import {
  BACKUP_TYPES,
  failedSetReport,
  QuiesceError,
  type BackupCompleteRequest,
  type CallOptions,
  type FreezeRequest,
  type GuestReport,
  type PostSnapshotRequest,
  type PostSnapshotResponse,
  type PrepareBackupRequest,
  type PrepareBackupResponse,
  type SetEvent,
  type SetReport,
  type SetRequest,
  type ThawResponse,
  type WriterMetadata,
  type WriterSession,
  type WriterState,
  type WriterStatus,
} from '../model/index.ts';
import { HeldFreezeProvider } from '../providers/index.ts';
import type { AgentEndpoint } from '../model/index.ts';
import { deferred, waitOrAbort, type Deferred } from '../util/index.ts';

export interface AgentEndpointOptions {
  /** The guest's name, as its host knows it. */
  name: string;
  /** The guest's own writers (their policies: `off` is kept, anything else is `require`). */
  writers: SetWriter[];
  /** Paths with no writer: held still by the file-system freeze alone. */
  paths: string[];
  stateDir: string;
  stagingDir: string;
  /** The guest's own deadline: it thaws by itself this long after freezing, whatever the host does. */
  freezeTimeoutMs: number;
  /** Deadline of every other call to the guest's writers. */
  callTimeoutMs?: number;
  freezeFilesystems: boolean;
  freezeRoot: boolean;
  onEvent?: (event: SetEvent) => void;
}

/**
 * Where one set inside the guest stands. It moves only through `advance`, forward, and any
 * stage but `done` may end (`done`: the coordinator's set is over, whatever its outcome).
 */
type Stage = 'preparing' | 'prepared' | 'freezing' | 'frozen' | 'thawing' | 'thawed' | 'completing' | 'done';

/** The stages a set may reach each stage from: the one transition table. */
const REACHED_FROM: { readonly [S in Stage]: readonly Stage[] } = {
  preparing: [],
  // The writers identified and negotiated (the host's PrepareBackup returns).
  prepared: ['preparing'],
  // The host's PrepareSnapshot: the writers prepare and freeze.
  freezing: ['prepared'],
  // Every file system is frozen (PrepareSnapshot returns).
  frozen: ['freezing'],
  // The host's Thaw.
  thawing: ['frozen'],
  // Everything thawed (Thaw returns). A set with nothing to snapshot commits nothing, so it
  // never freezes its file systems and comes here from `freezing`.
  thawed: ['thawing', 'freezing'],
  // The host's BackupComplete.
  completing: ['thawed'],
  done: ['preparing', 'prepared', 'freezing', 'frozen', 'thawing', 'thawed', 'completing'],
};

/** The stages someone waits for: each has a gate that `advance` opens. */
type GatedStage = Exclude<Stage, 'preparing' | 'done'>;

/** One set inside the guest. */
interface GuestSet {
  setId: string;
  stage: Stage;
  /** Opened once the set reaches each stage; never, for the stages it skips or ends before. */
  gates: Record<GatedStage, Deferred<void>>;
  /** The host's word on its backup (BackupComplete): true if every component was stored. */
  outcome: Deferred<boolean>;
  abort: AbortController;
  /** The set's final report, once it ends. */
  done: Promise<SetReport>;
  final: SetReport | null;
  /** The report as it stands, from the coordinator's gates. */
  current: (() => SetReport) | null;
  frozenAt: number | null;
  frozenAtEpoch: number | null;
  thawedAt: number | null;
  provider: HeldFreezeProvider;
}

type GuestSetPhase = 'prepare-backup' | 'prepare-snapshot' | 'freeze' | 'thaw' | 'post-snapshot' | 'backup-complete';

/** The agent's one state: the set in progress, the reports it keeps, the host's sessions. */
interface AgentState {
  options: AgentEndpointOptions;
  writers: SetWriter[];
  current: GuestSet | null;
  reports: Map<string, GuestReport>;
  lastFailure: QuiesceError | null;
  /** Open sessions of the host, per set. */
  sessions: Map<string, number>;
}

/** How many finished sets' reports the agent keeps for Report. */
const KEPT_REPORTS = 16;

/**
 * A guest as an AgentEndpoint.
 *
 * @example
 * const endpoint = createAgentEndpoint({ name: 'vm1', writers, paths: [], stateDir, stagingDir, freezeTimeoutMs: 60_000, freezeFilesystems: true, freezeRoot: false });
 * await serveAgent(endpoint, '0.0.0.0:7443', { identity, trusted: [hostCert] });
 */
export function createAgentEndpoint(options: AgentEndpointOptions): AgentEndpoint {
  const agent: AgentState = {
    options,
    writers: options.writers.map((w) => ({ ...w, policy: w.policy === 'off' ? 'off' : 'require' })),
    current: null,
    reports: new Map(),
    lastFailure: null,
    sessions: new Map(),
  };
  return {
    identify: (callOptions) => metadata(agent, callOptions),
    status: (callOptions) => status(agent, callOptions),
    prepareBackup: (request, callOptions) => prepareBackup(agent, request, callOptions),
    prepareSnapshot: (request, callOptions) => prepareSnapshot(agent, request, callOptions),
    freeze: async (request: FreezeRequest) => freeze(agent, request),
    thaw: (request) => thaw(agent, request),
    postSnapshot: async (request: PostSnapshotRequest): Promise<PostSnapshotResponse> => {
      setFor(agent, request.setId, 'post-snapshot', ['thawed']);
      return { components: [] };
    },
    backupComplete: (request) => backupComplete(agent, request),
    abort: (request) => end(agent, request.setId, 'the host aborted the set'),
    shutdown: (request) => end(agent, request.setId, 'the host ended the set'),
    // The host restores a guest's disk images itself; nothing inside the guest takes part.
    preRestore: async () => undefined,
    postRestore: async () => undefined,
    openSession: async (request) => openSession(agent, request),
    report: async (request) => report(agent, request),
    close: () => close(agent),
  };
}

/** Moves the set to `to`, opening its gate; a move the table does not list is a bug. */
function advance(set: GuestSet, to: Stage): void {
  if (!REACHED_FROM[to].includes(set.stage)) {
    throw new QuiesceError('nonretryable', `guest set ${set.setId} cannot go from ${set.stage} to ${to} (a bug)`);
  }
  set.stage = to;
  if (to !== 'preparing' && to !== 'done') set.gates[to].resolve();
}

/** Resolves once the set reaches `stage` (never, if it ends first). */
function reached(set: GuestSet, stage: GatedStage): Promise<void> {
  return set.gates[stage].promise;
}

async function metadata(agent: AgentState, callOptions: CallOptions = {}): Promise<WriterMetadata> {
  const inner = await Promise.all(
    agent.writers.map(async (w) => ({ writer: w.name, metadata: await w.endpoint.identify(callOptions) })),
  );
  return {
    name: agent.options.name,
    classId: 'quiesce.agent',
    instanceId: hostname(),
    usage: 'back-end',
    components: inner.flatMap(({ writer, metadata: m }) =>
      m.components.map((c) => ({ ...c, logicalPath: c.logicalPath ? `${writer}/${c.logicalPath}` : writer })),
    ),
    backupTypes: [...BACKUP_TYPES],
    restoreMethod: 'custom',
  };
}

async function status(agent: AgentState, callOptions?: CallOptions): Promise<WriterStatus> {
  const { current, lastFailure } = agent;
  return {
    metadata: await metadata(agent, callOptions),
    state: writerState(current?.stage),
    setId: current && current.stage !== 'done' ? current.setId : null,
    lastFailure: lastFailure ? lastFailure.toJSON() : null,
  };
}

function writerState(stage: Stage | undefined): WriterState {
  switch (stage) {
    case undefined:
    case 'done':
      return 'stable';
    case 'preparing':
    case 'prepared':
    case 'freezing':
      return 'waiting-for-freeze';
    case 'frozen':
    case 'thawing':
      return 'waiting-for-thaw';
    case 'thawed':
      return 'waiting-for-post-snapshot';
    case 'completing':
      return 'waiting-for-backup-complete';
    default:
      return stage satisfies never;
  }
}

function guestReport(agent: AgentState, set: GuestSet): GuestReport {
  const report = set.final ?? set.current?.() ?? null;
  const skipped = set.provider.skipped;
  return {
    name: agent.options.name,
    agent: 'quiesce',
    consistency: report?.consistency ?? 'none',
    status: report?.status ?? 'failed',
    error: report?.error ?? null,
    message: skipped.length > 0 ? `not frozen: ${skipped.join('; ')}` : null,
    frozenAtMs: set.frozenAtEpoch,
    freezeWindowMs: report?.freezeWindowMs ?? null,
    components: report?.components ?? [],
    writers: report?.writers ?? [],
    guests: report?.guests ?? [],
  };
}

/** The set named by a request, or an error that says what is out of order. */
function setFor(agent: AgentState, setId: string, phase: GuestSetPhase, expected: Stage[]): GuestSet {
  const set = agent.current;
  const name = agent.options.name;
  if (!set || set.setId !== setId) {
    const busy = set && set.stage !== 'done' ? ` (set ${set.setId} is in progress)` : '';
    throw new QuiesceError(
      'nonretryable',
      `guest ${name} has no set ${setId} to ${phase}${busy}: the host called ${phase} out of order`,
      { phase },
    );
  }
  if (!expected.includes(set.stage)) {
    throw new QuiesceError(
      'nonretryable',
      `guest ${name}: ${phase} of set ${setId} came while the guest is ${set.stage}; expected it when ${expected.join(' or ')}`,
      { phase },
    );
  }
  return set;
}

/** Waits until the set reaches `stage`, or for the set to end first (its failure is thrown). */
async function gate(
  agent: AgentState,
  set: GuestSet,
  stage: GatedStage,
  phase: GuestSetPhase,
  signal?: AbortSignal,
): Promise<void> {
  const ended = set.done.then((report) => {
    throw failureOf(agent, report, phase);
  });
  await waitOrAbort(Promise.race([reached(set, stage), ended]), signal);
}

function failureOf(agent: AgentState, report: SetReport, phase: GuestSetPhase): QuiesceError {
  const error = report.error;
  const name = agent.options.name;
  if (!error) return new QuiesceError('nonretryable', `guest ${name}: its set ended before ${phase}`, { phase });
  return new QuiesceError(error.code, `guest ${name}: ${error.message}`, {
    phase: error.phase ?? phase,
    writer: error.writer,
    component: error.component,
  });
}

/** Starts the guest's own set in the background; it waits at its first gate for the host. */
function startSet(agent: AgentState, request: PrepareBackupRequest): GuestSet {
  const set: GuestSet = {
    setId: request.setId,
    stage: 'preparing',
    gates: {
      prepared: deferred(),
      freezing: deferred(),
      frozen: deferred(),
      thawing: deferred(),
      thawed: deferred(),
      completing: deferred(),
    },
    outcome: deferred(),
    abort: new AbortController(),
    done: Promise.resolve(null as unknown as SetReport),
    final: null,
    current: null,
    frozenAt: null,
    frozenAtEpoch: null,
    thawedAt: null,
    // The guest's provider: it freezes the file systems and holds until the host says thaw.
    provider: new HeldFreezeProvider({
      freezeFilesystems: agent.options.freezeFilesystems,
      freezeRoot: agent.options.freezeRoot,
      maxFrozenMs: agent.options.freezeTimeoutMs,
      onFrozen: () => frozen(set),
      released: () => reached(set, 'thawing'),
    }),
  };
  set.done = runSnapshotSet(snapshotSetOptions(agent, set, request)).then(
    (report) => finish(agent, set, report),
    (error: unknown) => {
      // runSnapshotSet reports failures in its report; a throw is a refused start (set lock, bad state dir).
      const failure = QuiesceError.from(error, 'nonretryable', { phase: 'prepare-backup' });
      const refused = { id: request.setId, kind: 'backup' as const, requestedType: request.backupType };
      return finish(agent, set, failedSetReport(refused, failure.toJSON()));
    },
  );
  return set;
}

/** Every file system of the guest is frozen: the whole guest holds still now. */
function frozen(set: GuestSet): void {
  set.frozenAt = performance.now();
  set.frozenAtEpoch = Date.now();
  advance(set, 'frozen');
}

function snapshotSetOptions(agent: AgentState, set: GuestSet, request: PrepareBackupRequest): SnapshotSetOptions {
  const { options } = agent;
  const level = options.freezeFilesystems ? ('filesystem' as const) : ('crash' as const);
  return {
    kind: 'backup',
    backupType: request.backupType,
    writers: agent.writers,
    paths: options.paths,
    stateDir: options.stateDir,
    stagingDir: options.stagingDir,
    resolveProvider: async () => ({ provider: set.provider, level }),
    // A guest holds still for its host's snapshot even when it owns no file of its own.
    alwaysCommit: { provider: set.provider, level },
    freezeTimeoutMs: options.freezeTimeoutMs,
    // The guest's "commit" is holding still while the host snapshots: it may last the whole window.
    commitTimeoutMs: options.freezeTimeoutMs,
    callTimeoutMs: options.callTimeoutMs,
    setId: request.setId,
    signal: set.abort.signal,
    onEvent: options.onEvent,
    postSnapshot: false,
    beforePrepareSnapshot: async (report) => {
      set.current = report;
      advance(set, 'prepared');
      await reached(set, 'freezing');
    },
    use: (view) => awaitOutcome(agent, set, view),
  };
}

/** The set has thawed: it waits for the host's word on whether its backup was stored. */
async function awaitOutcome(agent: AgentState, set: GuestSet, view: SnapshotView): Promise<UseOutcome> {
  set.current = () => view.report();
  set.thawedAt = performance.now();
  advance(set, 'thawed');
  const stored = await set.outcome.promise;
  if (stored) return {};
  const error = new QuiesceError('nonretryable', `the host did not store the backup of guest ${agent.options.name}`, {
    phase: 'backup-complete',
  }).toJSON();
  return { failedComponents: view.components.map((c) => ({ writer: c.writer, component: c.component, error })) };
}

function finish(agent: AgentState, set: GuestSet, report: SetReport): SetReport {
  set.final = report;
  advance(set, 'done');
  if (report.error) agent.lastFailure = QuiesceError.fromJSON(report.error);
  agent.reports.set(set.setId, guestReport(agent, set));
  while (agent.reports.size > KEPT_REPORTS) agent.reports.delete(agent.reports.keys().next().value!);
  return report;
}

/** Ends the set in progress (if it is `setId`) and waits for everything inside to thaw and abort. */
async function end(agent: AgentState, setId: string, reason: string): Promise<void> {
  const set = agent.current;
  if (!set || set.setId !== setId || set.stage === 'done') return;
  if (set.stage === 'thawed' || set.stage === 'completing') set.outcome.resolve(false);
  else set.abort.abort(new QuiesceError('retryable', `guest ${agent.options.name}: ${reason}`));
  await set.done;
}

async function prepareBackup(
  agent: AgentState,
  request: PrepareBackupRequest,
  callOptions: CallOptions = {},
): Promise<PrepareBackupResponse> {
  const { current, options } = agent;
  if (current && current.stage !== 'done') {
    if (current.setId === request.setId) {
      throw new QuiesceError(
        'nonretryable',
        `guest ${options.name}: set ${request.setId} is already prepared; prepare-backup comes once per set`,
        { phase: 'prepare-backup' },
      );
    }
    throw new QuiesceError('retryable', `guest ${options.name} is busy with set ${current.setId}; retry when it ends`, {
      phase: 'prepare-backup',
    });
  }
  const set = startSet(agent, request);
  agent.current = set;
  try {
    await gate(agent, set, 'prepared', 'prepare-backup', callOptions.signal);
  } catch (error) {
    await end(agent, set.setId, 'prepare-backup was cancelled');
    throw error;
  }
  const report = set.current!();
  return {
    components: report.components.map((c) => ({
      component: `${c.writer}/${c.component}`,
      actualType: c.actualType,
      ...(c.typeReason === null ? {} : { typeReason: c.typeReason }),
    })),
  };
}

async function prepareSnapshot(agent: AgentState, request: SetRequest, callOptions: CallOptions = {}): Promise<void> {
  const set = setFor(agent, request.setId, 'prepare-snapshot', ['prepared']);
  advance(set, 'freezing');
  try {
    await gate(agent, set, 'frozen', 'prepare-snapshot', callOptions.signal);
  } catch (error) {
    await end(agent, set.setId, 'prepare-snapshot failed or was cancelled');
    throw error;
  }
}

function freeze(agent: AgentState, request: FreezeRequest): void {
  const set = setFor(agent, request.setId, 'freeze', ['frozen', 'done']);
  if (set.stage === 'done') throw failureOf(agent, set.final!, 'freeze');
}

async function thaw(agent: AgentState, request: SetRequest): Promise<ThawResponse> {
  const set = setFor(agent, request.setId, 'thaw', [
    'preparing',
    'prepared',
    'frozen',
    'thawing',
    'thawed',
    'completing',
    'done',
  ]);
  // Nothing frozen yet: thaw has nothing to undo and never fails for that (WriterEndpoint).
  if (set.stage === 'preparing' || set.stage === 'prepared') return { selfThawed: false, frozenMs: 0 };
  const frozenMs = (): number => (set.frozenAt === null ? 0 : (set.thawedAt ?? performance.now()) - set.frozenAt);
  if (set.stage === 'done') {
    // Ended before the host said thaw: the deadline, a lost session, or a failure inside.
    return { selfThawed: set.frozenAt !== null, frozenMs: frozenMs() };
  }
  if (set.stage === 'frozen') advance(set, 'thawing');
  try {
    await gate(agent, set, 'thawed', 'thaw');
  } catch {
    return { selfThawed: set.frozenAt !== null, frozenMs: frozenMs() };
  }
  const consistency = set.current!().consistency;
  return {
    selfThawed: false,
    frozenMs: frozenMs(),
    ...(consistency === 'application' ? {} : { consistency: consistency === 'none' ? 'crash' : consistency }),
  };
}

async function backupComplete(agent: AgentState, request: BackupCompleteRequest): Promise<void> {
  const set = setFor(agent, request.setId, 'backup-complete', ['thawed']);
  advance(set, 'completing');
  set.outcome.resolve(request.components.length > 0 && request.components.every((c) => c.succeeded));
  const report = await set.done;
  if (report.error && report.status === 'failed' && report.consistency === 'none')
    throw failureOf(agent, report, 'backup-complete');
}

function openSession(agent: AgentState, request: SetRequest): WriterSession {
  const { sessions } = agent;
  sessions.set(request.setId, (sessions.get(request.setId) ?? 0) + 1);
  let closed = false;
  return {
    close: async () => {
      if (closed) return;
      closed = true;
      const left = (sessions.get(request.setId) ?? 1) - 1;
      if (left > 0) {
        sessions.set(request.setId, left);
        return;
      }
      sessions.delete(request.setId);
      // The host is gone (or done): nothing of this set may stay frozen or pending.
      await end(agent, request.setId, 'the host session ended');
    },
  };
}

function report(agent: AgentState, request: SetRequest): GuestReport {
  const kept = agent.reports.get(request.setId);
  if (kept) return kept;
  if (agent.current && agent.current.setId === request.setId) return guestReport(agent, agent.current);
  throw new QuiesceError('nonretryable', `guest ${agent.options.name} knows no set ${request.setId}`);
}

async function close(agent: AgentState): Promise<void> {
  if (agent.current) await end(agent, agent.current.setId, 'the agent is stopping');
  await Promise.all(agent.writers.map((w) => w.endpoint.close().catch(() => undefined)));
}
