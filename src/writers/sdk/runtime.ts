import {
  QuiesceError,
  failedAt,
  type BackupCompleteRequest,
  type Failure,
  type FreezeRequest,
  type Phase,
  type PostSnapshotRequest,
  type PostSnapshotResponse,
  type PrepareBackupRequest,
  type PrepareBackupResponse,
  type RestoreRequest,
  type SetRequest,
  type ThawResponse,
  type WriterEndpoint,
  type WriterMetadata,
  type WriterSession,
  type WriterState,
  type WriterStatus,
  type CallOptions,
} from '../../model/index.ts';
import type { HandlerContext, WriterDefinition } from './definition.ts';

/** The set phases a runtime accepts, in order; each may only follow the one before it (or be skipped where noted). */
type Step = 'idle' | 'prepare-backup' | 'prepare-snapshot' | 'freeze' | 'thaw' | 'post-snapshot' | 'backup-complete';

const ORDER: Record<Exclude<Step, 'idle'>, readonly Step[]> = {
  'prepare-backup': ['idle'],
  'prepare-snapshot': ['prepare-backup'],
  freeze: ['prepare-snapshot'],
  thaw: ['freeze'],
  'post-snapshot': ['thaw'],
  'backup-complete': ['post-snapshot', 'thaw'],
};

/** The state `quiesce writers` shows after a phase succeeded. */
function stateAfter(step: Step): WriterState {
  switch (step) {
    case 'idle':
    case 'prepare-backup':
    case 'backup-complete':
      return 'stable';
    case 'prepare-snapshot':
      return 'waiting-for-freeze';
    case 'freeze':
      return 'waiting-for-thaw';
    case 'thaw':
      return 'waiting-for-post-snapshot';
    case 'post-snapshot':
      return 'waiting-for-backup-complete';
    default:
      return step satisfies never;
  }
}

export interface WriterRuntimeEvents {
  /** The watchdog thawed the writer on its own (deadline passed or the requester went away). */
  selfThawed?(setId: string, reason: 'deadline' | 'session-lost', frozenMs: number): void;
}

export interface WriterRuntimeOptions {
  events?: WriterRuntimeEvents;
  /** Clock for tests. */
  now?: () => number;
}

interface ActiveSet {
  id: string;
  step: Step;
  controller: AbortController;
  frozenAt: number | null;
  frozenMs: number;
  selfThawed: boolean;
  watchdog: NodeJS.Timeout | null;
  aborted: boolean;
  /** The handler call in flight, so abort can wait for it to settle. */
  inFlight: Promise<unknown> | null;
  sessions: number;
}

/**
 * Runs a writer definition: validates the order of phases, keeps the writer's state, and
 * guarantees thaw. The watchdog lives here, in the writer's own process: it thaws when the
 * freeze deadline passes or when the requester's session is lost while frozen, so a dead or
 * hung requester never leaves the application frozen.
 *
 * The runtime is a `WriterEndpoint`: use it in-process, or serve it with `serveWriter`.
 *
 * @example
 * const runtime = createWriterRuntime(createSqliteWriter({ name: 'shop', path: '/srv/shop.db', stateDir }));
 * await serveWriter(runtime, '/run/quiesce/writers/shop.sock');
 */
export function createWriterRuntime(definition: WriterDefinition, options: WriterRuntimeOptions = {}): WriterEndpoint {
  const now = options.now ?? (() => performance.now());
  let metadata: WriterMetadata | null = null;
  let state: WriterState = 'stable';
  let lastFailure: Failure | null = null;
  let active: ActiveSet | null = null;
  let thawing: Promise<void> | null = null;

  async function getMetadata(): Promise<WriterMetadata> {
    if (metadata) return metadata;
    metadata = typeof definition.metadata === 'function' ? await definition.metadata() : definition.metadata;
    return metadata;
  }

  function writerName(): string | null {
    return metadata?.name ?? null;
  }

  function context(set: ActiveSet, callOptions?: CallOptions): HandlerContext {
    const signal = callOptions?.signal
      ? AbortSignal.any([set.controller.signal, callOptions.signal])
      : set.controller.signal;
    return { setId: set.id, signal };
  }

  function fail(phase: Phase, error: unknown): QuiesceError {
    const failure = QuiesceError.from(error, 'nonretryable', { phase, writer: writerName() });
    state = failedAt(phase);
    lastFailure = failure.toJSON();
    return failure;
  }

  function requireSet(setId: string, phase: Phase): ActiveSet {
    if (!active || active.id !== setId) {
      throw new QuiesceError(
        'protocol',
        active
          ? `${phase} for set ${setId}, but this writer is in set ${active.id}`
          : `${phase} for set ${setId}, which this writer is not part of (prepare-backup first)`,
        { phase, writer: writerName() },
      );
    }
    return active;
  }

  function checkOrder(set: ActiveSet, step: Exclude<Step, 'idle'>): void {
    if (set.aborted) {
      throw new QuiesceError('protocol', `${step} after abort of set ${set.id}`, { phase: step, writer: writerName() });
    }
    if (!ORDER[step].includes(set.step)) {
      throw new QuiesceError('protocol', `${step} out of order: the last phase of set ${set.id} was ${set.step}`, {
        phase: step,
        writer: writerName(),
      });
    }
  }

  /** Runs one phase's handler with order checks, state bookkeeping and failure recording. */
  async function run<T>(
    setId: string,
    step: Exclude<Step, 'idle'>,
    callOptions: CallOptions | undefined,
    body: (set: ActiveSet, ctx: HandlerContext) => Promise<T>,
  ): Promise<T> {
    const set = requireSet(setId, step);
    checkOrder(set, step);
    const promise = body(set, context(set, callOptions));
    set.inFlight = promise;
    try {
      const result = await promise;
      set.step = step;
      if (!set.selfThawed) state = stateAfter(step);
      return result;
    } catch (error) {
      throw fail(step, error);
    } finally {
      if (set.inFlight === promise) set.inFlight = null;
    }
  }

  /** Thaws if frozen; safe to call from any path, any number of times. */
  async function thawIfFrozen(
    set: ActiveSet,
    reason: 'coordinator' | 'deadline' | 'session-lost' | 'abort',
  ): Promise<void> {
    if (thawing) {
      await thawing;
      return;
    }
    if (set.frozenAt === null) return;
    const frozenAt = set.frozenAt;
    thawing = (async () => {
      if (set.watchdog) clearTimeout(set.watchdog);
      set.watchdog = null;
      try {
        await definition.thaw({ setId: set.id, signal: AbortSignal.timeout(60_000) });
      } finally {
        set.frozenMs = now() - frozenAt;
        set.frozenAt = null;
        if (reason === 'deadline' || reason === 'session-lost') {
          set.selfThawed = true;
          const failure = new QuiesceError(
            'timeout',
            reason === 'deadline'
              ? `the writer thawed itself after ${Math.round(set.frozenMs)} ms frozen: the freeze-to-thaw deadline passed before the requester said thaw`
              : 'the writer thawed itself: its requester went away while it was frozen',
            { phase: 'thaw', writer: writerName() },
          );
          state = failedAt('thaw');
          lastFailure = failure.toJSON();
          options.events?.selfThawed?.(set.id, reason, set.frozenMs);
        }
      }
    })();
    try {
      await thawing;
    } finally {
      thawing = null;
    }
  }

  /** Undo everything of the set; idempotent. */
  async function abortSet(set: ActiveSet): Promise<void> {
    if (set.aborted) return;
    set.aborted = true;
    set.controller.abort(
      new QuiesceError('retryable', `set ${set.id} was aborted`, { phase: 'abort', writer: writerName() }),
    );
    // Wait a little for the call in flight to notice; a handler that ignores its signal cannot
    // hold the abort: if its freeze still succeeds later, it finds the set aborted and thaws.
    if (set.inFlight) await settledWithin(set.inFlight, 1_000);
    await thawIfFrozen(set, 'abort').catch(() => undefined);
    if (definition.abort) {
      try {
        await definition.abort({ setId: set.id, signal: AbortSignal.timeout(60_000) });
      } catch (error) {
        throw fail('abort', error);
      }
    }
  }

  async function endSet(set: ActiveSet): Promise<void> {
    try {
      await thawIfFrozen(set, 'abort').catch(() => undefined);
      if (definition.shutdown) {
        await definition.shutdown({ setId: set.id, signal: AbortSignal.timeout(60_000) }).catch((error: unknown) => {
          fail('shutdown', error);
        });
      }
    } finally {
      if (set.watchdog) clearTimeout(set.watchdog);
      if (active === set) active = null;
    }
  }

  /** The set with this id, begun now if the writer is idle; another set in progress is `retryable`. */
  function ensureSet(setId: string, phase: Phase): ActiveSet {
    if (active && active.id !== setId) {
      throw new QuiesceError('retryable', `this writer is busy with set ${active.id}; try again when it ends`, {
        phase,
        writer: writerName(),
      });
    }
    if (!active) {
      active = {
        id: setId,
        step: 'idle',
        controller: new AbortController(),
        frozenAt: null,
        frozenMs: 0,
        selfThawed: false,
        watchdog: null,
        aborted: false,
        inFlight: null,
        sessions: 0,
      };
      lastFailure = null;
      state = 'stable';
    }
    return active;
  }

  const endpoint: WriterEndpoint = {
    async identify() {
      return getMetadata();
    },

    async status(): Promise<WriterStatus> {
      return { metadata: await getMetadata(), state, setId: active?.id ?? null, lastFailure };
    },

    async prepareBackup(request: PrepareBackupRequest, callOptions?: CallOptions): Promise<PrepareBackupResponse> {
      await getMetadata();
      ensureSet(request.setId, 'prepare-backup');
      return run(request.setId, 'prepare-backup', callOptions, async (_set, ctx) => {
        const plans = (await definition.prepareBackup?.(request, ctx)) ?? [];
        if (plans.length > 0) return { components: plans };
        // A writer without its own negotiation honours the requested type for every selected component.
        return {
          components: request.components.map((c) => ({ component: c.component, actualType: request.backupType })),
        };
      });
    },

    async prepareSnapshot(request: SetRequest, callOptions?: CallOptions) {
      await run(request.setId, 'prepare-snapshot', callOptions, async (_set, ctx) => {
        await definition.prepareSnapshot?.(ctx);
      });
    },

    async freeze(request: FreezeRequest, callOptions?: CallOptions) {
      await run(request.setId, 'freeze', callOptions, async (set, ctx) => {
        await definition.freeze(ctx);
        set.frozenAt = now();
        if (set.aborted || ctx.signal.aborted) {
          // Abort raced with a freeze that succeeded anyway: never stay frozen.
          await thawIfFrozen(set, 'abort');
          throw new QuiesceError('retryable', `set ${set.id} was aborted during freeze`, { phase: 'freeze' });
        }
        set.watchdog = setTimeout(() => {
          thawIfFrozen(set, 'deadline').catch((error: unknown) => fail('thaw', error));
        }, request.thawDeadlineMs);
      });
    },

    async thaw(request: SetRequest, callOptions?: CallOptions): Promise<ThawResponse> {
      const set = requireSet(request.setId, 'thaw');
      if (set.step === 'freeze' || set.frozenAt !== null || thawing) {
        try {
          await thawIfFrozen(set, 'coordinator');
        } catch (error) {
          throw fail('thaw', error);
        }
      }
      const response: ThawResponse = { selfThawed: set.selfThawed, frozenMs: set.frozenMs };
      // A writer that freezes file systems alone never claims more than that.
      if (definition.level === 'filesystem') response.consistency = 'filesystem';
      if (set.step === 'freeze') {
        set.step = 'thaw';
        if (!set.selfThawed) state = stateAfter('thaw');
      }
      void callOptions;
      return response;
    },

    async postSnapshot(request: PostSnapshotRequest, callOptions?: CallOptions): Promise<PostSnapshotResponse> {
      return run(request.setId, 'post-snapshot', callOptions, async (_set, ctx) => {
        return (await definition.postSnapshot?.(request, ctx)) ?? { components: [] };
      });
    },

    async backupComplete(request: BackupCompleteRequest, callOptions?: CallOptions) {
      await run(request.setId, 'backup-complete', callOptions, async (_set, ctx) => {
        await definition.backupComplete?.(request, ctx);
      });
    },

    async abort(request: SetRequest) {
      if (!active || active.id !== request.setId) return; // nothing to undo: idempotent
      await abortSet(active);
      state = state.startsWith('failed-at-') ? state : 'stable';
    },

    async shutdown(request: SetRequest) {
      if (!active || active.id !== request.setId) return;
      await endSet(active);
    },

    async preRestore(request: RestoreRequest, callOptions?: CallOptions) {
      try {
        await definition.preRestore?.(request, {
          setId: request.setId,
          signal: callOptions?.signal ?? new AbortController().signal,
        });
      } catch (error) {
        throw fail('pre-restore', error);
      }
    },

    async postRestore(request: RestoreRequest, callOptions?: CallOptions) {
      try {
        await definition.postRestore?.(request, {
          setId: request.setId,
          signal: callOptions?.signal ?? new AbortController().signal,
        });
      } catch (error) {
        throw fail('post-restore', error);
      }
    },

    async openSession(request: SetRequest): Promise<WriterSession> {
      await getMetadata();
      const set = ensureSet(request.setId, 'prepare-backup');
      set.sessions += 1;
      let closed = false;
      return {
        async close() {
          if (closed) return;
          closed = true;
          set.sessions -= 1;
          if (active !== set || set.sessions > 0) return;
          // The requester is gone. Anything still open is undone: thaw now, abort, end the set.
          if (set.frozenAt !== null) await thawIfFrozen(set, 'session-lost').catch(() => undefined);
          if (set.step !== 'backup-complete') await abortSet(set).catch(() => undefined);
          await endSet(set);
        },
      };
    },

    async close() {
      if (active) {
        await abortSet(active).catch(() => undefined);
        await endSet(active);
      }
      await definition.close?.();
    },
  };
  return endpoint;
}

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
