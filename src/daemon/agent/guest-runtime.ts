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
import { runSnapshotSet, type SetWriter } from '../../coordinator/index.ts';
import {
  BACKUP_TYPES,
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
} from '../../model/index.ts';
import type { AgentEndpoint } from '../../model/index.ts';
import { HeldFreezeProvider } from './held-freeze-provider.ts';

export interface GuestRuntimeOptions {
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

type Stage = 'preparing' | 'prepared' | 'freezing' | 'frozen' | 'thawing' | 'thawed' | 'completing' | 'done';

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** One set inside the guest. */
interface GuestSet {
  setId: string;
  stage: Stage;
  abort: AbortController;
  /** The set's final report, once it ends. */
  done: Promise<SetReport>;
  final: SetReport | null;
  /** The report as it stands, from the coordinator's gates. */
  current: (() => SetReport) | null;
  prepared: Deferred<void>;
  goFreeze: Deferred<void>;
  frozen: Deferred<void>;
  release: Deferred<void>;
  thawed: Deferred<void>;
  outcome: Deferred<boolean>;
  frozenAt: number | null;
  frozenAtEpoch: number | null;
  thawedAt: number | null;
  provider: HeldFreezeProvider;
}

/** How many finished sets' reports the agent keeps for Report. */
const KEPT_REPORTS = 16;

/**
 * A guest as an AgentEndpoint.
 *
 * @example
 * const runtime = createGuestRuntime({ name: 'vm1', writers, paths: [], stateDir, stagingDir, freezeTimeoutMs: 60_000, freezeFilesystems: true, freezeRoot: false });
 * await serveAgent(runtime, '0.0.0.0:7443', { identity, trusted: [hostCert] });
 */
export function createGuestRuntime(options: GuestRuntimeOptions): AgentEndpoint {
  let current: GuestSet | null = null;
  const reports = new Map<string, GuestReport>();
  let lastFailure: QuiesceError | null = null;
  const sessions = new Map<string, number>();

  const writers: SetWriter[] = options.writers.map((w) => ({ ...w, policy: w.policy === 'off' ? 'off' : 'require' }));

  async function metadata(callOptions: CallOptions = {}): Promise<WriterMetadata> {
    const inner = await Promise.all(
      writers.map(async (w) => ({ writer: w.name, metadata: await w.endpoint.identify(callOptions) })),
    );
    return {
      name: options.name,
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

  function guestReport(set: GuestSet): GuestReport {
    const report = set.final ?? set.current?.() ?? null;
    const skipped = set.provider.skipped;
    return {
      name: options.name,
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
  function setFor(setId: string, phase: GuestSetPhase, expected: Stage[]): GuestSet {
    const set = current;
    if (!set || set.setId !== setId) {
      const busy = set && set.stage !== 'done' ? ` (set ${set.setId} is in progress)` : '';
      throw new QuiesceError(
        'nonretryable',
        `guest ${options.name} has no set ${setId} to ${phase}${busy}: the host called ${phase} out of order`,
        { phase },
      );
    }
    if (!expected.includes(set.stage)) {
      throw new QuiesceError(
        'nonretryable',
        `guest ${options.name}: ${phase} of set ${setId} came while the guest is ${set.stage}; expected it when ${expected.join(' or ')}`,
        { phase },
      );
    }
    return set;
  }

  /** Waits for one gate of the set, or for the set to end first (its failure is thrown). */
  async function gate(set: GuestSet, step: Deferred<void>, phase: GuestSetPhase, signal?: AbortSignal): Promise<void> {
    const ended = set.done.then((report) => {
      throw failureOf(report, phase);
    });
    ended.catch(() => undefined);
    const cancelled = new Promise<never>((_, reject) => {
      if (!signal) return;
      if (signal.aborted) reject(signal.reason as Error);
      signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    });
    cancelled.catch(() => undefined);
    await Promise.race([step.promise, ended, cancelled]);
  }

  function failureOf(report: SetReport, phase: GuestSetPhase): QuiesceError {
    const error = report.error;
    if (!error)
      return new QuiesceError('nonretryable', `guest ${options.name}: its set ended before ${phase}`, { phase });
    return new QuiesceError(error.code, `guest ${options.name}: ${error.message}`, {
      phase: error.phase ?? phase,
      writer: error.writer,
      component: error.component,
    });
  }

  function start(request: PrepareBackupRequest): GuestSet {
    const abort = new AbortController();
    const set: GuestSet = {
      setId: request.setId,
      stage: 'preparing',
      abort,
      done: Promise.resolve(null as unknown as SetReport),
      final: null,
      current: null,
      prepared: deferred(),
      goFreeze: deferred(),
      frozen: deferred(),
      release: deferred(),
      thawed: deferred(),
      outcome: deferred(),
      frozenAt: null,
      frozenAtEpoch: null,
      thawedAt: null,
      provider: new HeldFreezeProvider({
        freezeFilesystems: options.freezeFilesystems,
        freezeRoot: options.freezeRoot,
        maxFrozenMs: options.freezeTimeoutMs,
        onFrozen: () => {
          set.frozenAt = performance.now();
          set.frozenAtEpoch = Date.now();
          set.stage = 'frozen';
          set.frozen.resolve();
        },
        released: () => set.release.promise,
      }),
    };
    const level = options.freezeFilesystems ? ('filesystem' as const) : ('crash' as const);
    set.done = runSnapshotSet({
      kind: 'backup',
      backupType: request.backupType,
      writers,
      paths: options.paths,
      stateDir: options.stateDir,
      stagingDir: options.stagingDir,
      resolveProvider: async () => ({ provider: set.provider, level }),
      freezeTimeoutMs: options.freezeTimeoutMs,
      // The guest's "commit" is holding still while the host snapshots: it may last the whole window.
      commitTimeoutMs: options.freezeTimeoutMs,
      callTimeoutMs: options.callTimeoutMs,
      setId: request.setId,
      signal: abort.signal,
      onEvent: options.onEvent,
      postSnapshot: false,
      beforePrepareSnapshot: async (report) => {
        set.current = report;
        set.stage = 'prepared';
        set.prepared.resolve();
        await set.goFreeze.promise;
        set.stage = 'freezing';
      },
      use: async (view) => {
        set.current = () => view.report();
        set.thawedAt = performance.now();
        set.stage = 'thawed';
        set.thawed.resolve();
        const stored = await set.outcome.promise;
        if (stored) return {};
        const error = new QuiesceError('nonretryable', `the host did not store the backup of guest ${options.name}`, {
          phase: 'backup-complete',
        }).toJSON();
        return { failedComponents: view.components.map((c) => ({ writer: c.writer, component: c.component, error })) };
      },
    }).then(
      (report) => finish(set, report),
      (error: unknown) => {
        // runSnapshotSet reports failures in its report; a throw is a refused start (set lock, bad state dir).
        const failure = QuiesceError.from(error, 'nonretryable', { phase: 'prepare-backup' });
        return finish(set, failedReport(request, failure));
      },
    );
    return set;
  }

  function finish(set: GuestSet, report: SetReport): SetReport {
    set.final = report;
    set.stage = 'done';
    if (report.error) lastFailure = QuiesceError.fromJSON(report.error);
    reports.set(set.setId, guestReport(set));
    while (reports.size > KEPT_REPORTS) reports.delete(reports.keys().next().value!);
    return report;
  }

  function failedReport(request: PrepareBackupRequest, failure: QuiesceError): SetReport {
    const now = new Date().toISOString();
    return {
      id: request.setId,
      kind: 'backup',
      requestedType: request.backupType,
      status: 'failed',
      consistency: 'none',
      startedAt: now,
      finishedAt: now,
      freezeWindowMs: null,
      commitMs: null,
      error: failure.toJSON(),
      benign: [],
      writers: [],
      components: [],
      snapshots: [],
      guests: [],
      kept: false,
      stats: { files: 0, bytesRead: 0, bytesAdded: 0, durationMs: 0 },
    };
  }

  /** Ends the set in progress (if it is `setId`) and waits for everything inside to thaw and abort. */
  async function end(setId: string, reason: string): Promise<void> {
    const set = current;
    if (!set || set.setId !== setId || set.stage === 'done') return;
    if (set.stage === 'thawed' || set.stage === 'completing') set.outcome.resolve(false);
    else set.abort.abort(new QuiesceError('retryable', `guest ${options.name}: ${reason}`));
    await set.done;
  }

  function writerState(): WriterState {
    const stage = current?.stage;
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

  return {
    identify: (callOptions) => metadata(callOptions),

    async status(callOptions): Promise<WriterStatus> {
      return {
        metadata: await metadata(callOptions),
        state: writerState(),
        setId: current && current.stage !== 'done' ? current.setId : null,
        lastFailure: lastFailure ? lastFailure.toJSON() : null,
      };
    },

    async prepareBackup(request: PrepareBackupRequest, callOptions: CallOptions = {}): Promise<PrepareBackupResponse> {
      if (current && current.stage !== 'done') {
        if (current.setId === request.setId) {
          throw new QuiesceError(
            'nonretryable',
            `guest ${options.name}: set ${request.setId} is already prepared; prepare-backup comes once per set`,
            { phase: 'prepare-backup' },
          );
        }
        throw new QuiesceError(
          'retryable',
          `guest ${options.name} is busy with set ${current.setId}; retry when it ends`,
          { phase: 'prepare-backup' },
        );
      }
      const set = start(request);
      current = set;
      try {
        await gate(set, set.prepared, 'prepare-backup', callOptions.signal);
      } catch (error) {
        await end(set.setId, 'prepare-backup was cancelled');
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
    },

    async prepareSnapshot(request: SetRequest, callOptions: CallOptions = {}): Promise<void> {
      const set = setFor(request.setId, 'prepare-snapshot', ['prepared']);
      set.goFreeze.resolve();
      try {
        await gate(set, set.frozen, 'prepare-snapshot', callOptions.signal);
      } catch (error) {
        await end(set.setId, 'prepare-snapshot failed or was cancelled');
        throw error;
      }
    },

    async freeze(request: FreezeRequest): Promise<void> {
      const set = setFor(request.setId, 'freeze', ['frozen', 'done']);
      if (set.stage === 'done') throw failureOf(set.final!, 'freeze');
    },

    async thaw(request: SetRequest): Promise<ThawResponse> {
      const set = setFor(request.setId, 'thaw', [
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
      if (set.stage === 'frozen') set.stage = 'thawing';
      set.release.resolve();
      try {
        await gate(set, set.thawed, 'thaw');
      } catch {
        return { selfThawed: set.frozenAt !== null, frozenMs: frozenMs() };
      }
      const consistency = set.current!().consistency;
      return {
        selfThawed: false,
        frozenMs: frozenMs(),
        ...(consistency === 'application'
          ? {}
          : { consistency: consistency === 'filesystem' ? 'filesystem' : 'crash' }),
      };
    },

    async postSnapshot(request: PostSnapshotRequest): Promise<PostSnapshotResponse> {
      setFor(request.setId, 'post-snapshot', ['thawed']);
      return { components: [] };
    },

    async backupComplete(request: BackupCompleteRequest): Promise<void> {
      const set = setFor(request.setId, 'backup-complete', ['thawed']);
      set.stage = 'completing';
      set.outcome.resolve(request.components.length > 0 && request.components.every((c) => c.succeeded));
      const report = await set.done;
      if (report.error && report.status === 'failed' && report.consistency === 'none')
        throw failureOf(report, 'backup-complete');
    },

    async abort(request: SetRequest): Promise<void> {
      await end(request.setId, 'the host aborted the set');
    },

    async shutdown(request: SetRequest): Promise<void> {
      await end(request.setId, 'the host ended the set');
    },

    // The host restores a guest's disk images itself; nothing inside the guest takes part.
    preRestore: async () => undefined,
    postRestore: async () => undefined,

    async openSession(request: SetRequest): Promise<WriterSession> {
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
          await end(request.setId, 'the host session ended');
        },
      };
    },

    async report(request: SetRequest): Promise<GuestReport> {
      const kept = reports.get(request.setId);
      if (kept) return kept;
      if (current && current.setId === request.setId) return guestReport(current);
      throw new QuiesceError('nonretryable', `guest ${options.name} knows no set ${request.setId}`);
    },

    async close(): Promise<void> {
      if (current) await end(current.setId, 'the agent is stopping');
      await Promise.all(writers.map((w) => w.endpoint.close().catch(() => undefined)));
    },
  };
}

type GuestSetPhase = 'prepare-backup' | 'prepare-snapshot' | 'freeze' | 'thaw' | 'post-snapshot' | 'backup-complete';
