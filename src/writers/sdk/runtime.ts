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
import {
  beginSet,
  checkOrder,
  selfThawFailure,
  settledWithin,
  stateAfter,
  type ActiveSet,
  type SetPhase,
  type ThawReason,
} from './active-set.ts';
import type { HandlerContext, ThawOutcome, WriterDefinition } from './definition.ts';

export interface WriterRuntimeEvents {
  /** The watchdog thawed the writer on its own (deadline passed or the requester went away). */
  selfThawed?(setId: string, reason: 'deadline' | 'session-lost', frozenMs: number): void;
}

export interface WriterRuntimeOptions {
  events?: WriterRuntimeEvents;
  /** Clock for tests. */
  now?: () => number;
}

/** The limit of a thaw, abort or shutdown handler the runtime calls on its own. */
const CLEANUP_TIMEOUT_MS = 60_000;
/** How long abort waits for the handler call in flight to notice its signal. */
const IN_FLIGHT_GRACE_MS = 1_000;

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
  const runtime = new WriterRuntime(definition, options);
  // A plain object of bound calls, so the endpoint may be spread or its calls passed around.
  return {
    identify: () => runtime.identify(),
    status: () => runtime.status(),
    prepareBackup: (request, callOptions) => runtime.prepareBackup(request, callOptions),
    prepareSnapshot: (request, callOptions) => runtime.prepareSnapshot(request, callOptions),
    freeze: (request, callOptions) => runtime.freeze(request, callOptions),
    thaw: (request) => runtime.thaw(request),
    postSnapshot: (request, callOptions) => runtime.postSnapshot(request, callOptions),
    backupComplete: (request, callOptions) => runtime.backupComplete(request, callOptions),
    abort: (request) => runtime.abort(request),
    shutdown: (request) => runtime.shutdown(request),
    preRestore: (request, callOptions) => runtime.preRestore(request, callOptions),
    postRestore: (request, callOptions) => runtime.postRestore(request, callOptions),
    openSession: (request) => runtime.openSession(request),
    close: () => runtime.close(),
  };
}

/** One writer definition's state across sets: the set in progress, the state shown, the last failure. */
class WriterRuntime {
  readonly #definition: WriterDefinition;
  readonly #options: WriterRuntimeOptions;
  readonly #now: () => number;
  #metadata: WriterMetadata | null = null;
  #state: WriterState = 'stable';
  #lastFailure: Failure | null = null;
  #active: ActiveSet | null = null;
  #thawing: Promise<void> | null = null;

  constructor(definition: WriterDefinition, options: WriterRuntimeOptions) {
    this.#definition = definition;
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
  }

  async identify(): Promise<WriterMetadata> {
    return this.#getMetadata();
  }

  async status(): Promise<WriterStatus> {
    return {
      metadata: await this.#getMetadata(),
      state: this.#state,
      setId: this.#active?.id ?? null,
      lastFailure: this.#lastFailure,
    };
  }

  async prepareBackup(request: PrepareBackupRequest, callOptions?: CallOptions): Promise<PrepareBackupResponse> {
    await this.#getMetadata();
    this.#ensureSet(request.setId, 'prepare-backup');
    return this.#run(request.setId, 'prepare-backup', callOptions, async (_set, ctx) => {
      const plans = (await this.#definition.prepareBackup?.(request, ctx)) ?? [];
      if (plans.length > 0) return { components: plans };
      // A writer without its own negotiation honours the requested type for every selected component.
      return {
        components: request.components.map((c) => ({ component: c.component, actualType: request.backupType })),
      };
    });
  }

  async prepareSnapshot(request: SetRequest, callOptions?: CallOptions): Promise<void> {
    await this.#run(request.setId, 'prepare-snapshot', callOptions, async (_set, ctx) => {
      await this.#definition.prepareSnapshot?.(ctx);
    });
  }

  async freeze(request: FreezeRequest, callOptions?: CallOptions): Promise<void> {
    await this.#run(request.setId, 'freeze', callOptions, (set, ctx) =>
      this.#freezeAndWatch(set, ctx, request.thawDeadlineMs),
    );
  }

  async thaw(request: SetRequest): Promise<ThawResponse> {
    const set = this.#requireSet(request.setId, 'thaw');
    if (set.step === 'freeze' || set.frozenAt !== null || this.#thawing) {
      try {
        await this.#thawIfFrozen(set, 'coordinator');
      } catch (error) {
        throw this.#fail('thaw', error);
      }
    }
    const response: ThawResponse = { selfThawed: set.selfThawed, frozenMs: set.frozenMs };
    // A writer that freezes file systems alone never claims more than that.
    if (this.#definition.level === 'filesystem') response.consistency = 'filesystem';
    if (set.step === 'freeze') {
      set.step = 'thaw';
      if (!set.selfThawed) this.#state = stateAfter('thaw');
    }
    return response;
  }

  async postSnapshot(request: PostSnapshotRequest, callOptions?: CallOptions): Promise<PostSnapshotResponse> {
    return this.#run(request.setId, 'post-snapshot', callOptions, async (_set, ctx) => {
      return (await this.#definition.postSnapshot?.(request, ctx)) ?? { components: [] };
    });
  }

  async backupComplete(request: BackupCompleteRequest, callOptions?: CallOptions): Promise<void> {
    await this.#run(request.setId, 'backup-complete', callOptions, async (_set, ctx) => {
      await this.#definition.backupComplete?.(request, ctx);
    });
  }

  async abort(request: SetRequest): Promise<void> {
    if (!this.#active || this.#active.id !== request.setId) return; // nothing to undo: idempotent
    await this.#abortSet(this.#active);
    this.#state = this.#state.startsWith('failed-at-') ? this.#state : 'stable';
  }

  async shutdown(request: SetRequest): Promise<void> {
    if (!this.#active || this.#active.id !== request.setId) return;
    await this.#endSet(this.#active);
  }

  async preRestore(request: RestoreRequest, callOptions?: CallOptions): Promise<void> {
    try {
      await this.#definition.preRestore?.(request, restoreContext(request, callOptions));
    } catch (error) {
      throw this.#fail('pre-restore', error);
    }
  }

  async postRestore(request: RestoreRequest, callOptions?: CallOptions): Promise<void> {
    try {
      await this.#definition.postRestore?.(request, restoreContext(request, callOptions));
    } catch (error) {
      throw this.#fail('post-restore', error);
    }
  }

  async openSession(request: SetRequest): Promise<WriterSession> {
    await this.#getMetadata();
    const set = this.#ensureSet(request.setId, 'prepare-backup');
    set.sessions += 1;
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        await this.#sessionClosed(set);
      },
    };
  }

  async close(): Promise<void> {
    if (this.#active) {
      await this.#abortAndGoOn(this.#active);
      await this.#endSet(this.#active);
    }
    await this.#definition.close?.();
  }

  async #getMetadata(): Promise<WriterMetadata> {
    if (this.#metadata) return this.#metadata;
    const definition = this.#definition;
    this.#metadata = typeof definition.metadata === 'function' ? await definition.metadata() : definition.metadata;
    return this.#metadata;
  }

  #writerName(): string | null {
    return this.#metadata?.name ?? null;
  }

  #fail(phase: Phase, error: unknown): QuiesceError {
    const failure = QuiesceError.from(error, 'nonretryable', { phase, writer: this.#writerName() });
    this.#state = failedAt(phase);
    this.#lastFailure = failure.toJSON();
    return failure;
  }

  #requireSet(setId: string, phase: Phase): ActiveSet {
    const active = this.#active;
    if (!active || active.id !== setId) {
      throw new QuiesceError(
        'protocol',
        active
          ? `${phase} for set ${setId}, but this writer is in set ${active.id}`
          : `${phase} for set ${setId}, which this writer is not part of (prepare-backup first)`,
        { phase, writer: this.#writerName() },
      );
    }
    return active;
  }

  /** The set with this id, begun now if the writer is idle; another set in progress is `retryable`. */
  #ensureSet(setId: string, phase: Phase): ActiveSet {
    if (this.#active && this.#active.id !== setId) {
      throw new QuiesceError('retryable', `this writer is busy with set ${this.#active.id}; try again when it ends`, {
        phase,
        writer: this.#writerName(),
      });
    }
    if (!this.#active) {
      this.#active = beginSet(setId);
      this.#lastFailure = null;
      this.#state = 'stable';
    }
    return this.#active;
  }

  /** Runs one phase's handler with order checks, state bookkeeping and failure recording. */
  async #run<T>(
    setId: string,
    step: SetPhase,
    callOptions: CallOptions | undefined,
    body: (set: ActiveSet, ctx: HandlerContext) => Promise<T>,
  ): Promise<T> {
    const set = this.#requireSet(setId, step);
    checkOrder(set, step, this.#writerName());
    const promise = body(set, handlerContext(set, callOptions));
    set.inFlight = promise;
    try {
      const result = await promise;
      set.step = step;
      if (!set.selfThawed) this.#state = stateAfter(step);
      return result;
    } catch (error) {
      throw this.#fail(step, error);
    } finally {
      if (set.inFlight === promise) set.inFlight = null;
    }
  }

  /** The freeze handler, then the watchdog that thaws at the deadline; a freeze that lost to abort thaws at once. */
  async #freezeAndWatch(set: ActiveSet, ctx: HandlerContext, thawDeadlineMs: number): Promise<void> {
    await this.#definition.freeze({ ...ctx, thawDeadlineMs });
    set.frozenAt = this.#now();
    if (set.aborted || ctx.signal.aborted) {
      // Abort raced with a freeze that succeeded anyway: never stay frozen.
      await this.#thawIfFrozen(set, 'abort');
      throw new QuiesceError('retryable', `set ${set.id} was aborted during freeze`, { phase: 'freeze' });
    }
    set.watchdog = setTimeout(() => void this.#thawOrRecord(set, 'deadline'), thawDeadlineMs);
  }

  /** Thaws if frozen; safe to call from any path, any number of times. */
  async #thawIfFrozen(set: ActiveSet, reason: ThawReason): Promise<void> {
    if (this.#thawing) {
      await this.#thawing;
      return;
    }
    if (set.frozenAt === null) return;
    this.#thawing = this.#thawNow(set, set.frozenAt, reason);
    try {
      await this.#thawing;
    } finally {
      this.#thawing = null;
    }
  }

  async #thawNow(set: ActiveSet, frozenAt: number, reason: ThawReason): Promise<void> {
    if (set.watchdog) clearTimeout(set.watchdog);
    set.watchdog = null;
    let outcome: void | ThawOutcome;
    try {
      outcome = await this.#definition.thaw({ setId: set.id, signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
    } finally {
      set.frozenMs = this.#now() - frozenAt;
      set.frozenAt = null;
      if (reason === 'deadline' || reason === 'session-lost') this.#recordSelfThaw(set, reason);
    }
    // The writer's own guard thawed at the deadline before this thaw (this process was stopped).
    if (outcome?.selfThawed && !set.selfThawed) {
      if (outcome.frozenMs !== undefined) set.frozenMs = outcome.frozenMs;
      this.#recordSelfThaw(set, 'deadline');
    }
  }

  #recordSelfThaw(set: ActiveSet, reason: 'deadline' | 'session-lost'): void {
    set.selfThawed = true;
    this.#state = failedAt('thaw');
    this.#lastFailure = selfThawFailure(reason, set.frozenMs, this.#writerName()).toJSON();
    this.#options.events?.selfThawed?.(set.id, reason, set.frozenMs);
  }

  /**
   * A thaw on a path that must go on (the watchdog, abort, the end of a set): a failure is not
   * thrown but recorded as the writer's failure at thaw, which `status` shows.
   */
  async #thawOrRecord(set: ActiveSet, reason: ThawReason): Promise<void> {
    try {
      await this.#thawIfFrozen(set, reason);
    } catch (error) {
      this.#fail('thaw', error);
    }
  }

  /** Undo everything of the set; idempotent. */
  async #abortSet(set: ActiveSet): Promise<void> {
    if (set.aborted) return;
    set.aborted = true;
    set.controller.abort(
      new QuiesceError('retryable', `set ${set.id} was aborted`, { phase: 'abort', writer: this.#writerName() }),
    );
    // Wait a little for the call in flight to notice; a handler that ignores its signal cannot
    // hold the abort: if its freeze still succeeds later, it finds the set aborted and thaws.
    if (set.inFlight) await settledWithin(set.inFlight, IN_FLIGHT_GRACE_MS);
    await this.#thawOrRecord(set, 'abort');
    if (this.#definition.abort) {
      try {
        await this.#definition.abort({ setId: set.id, signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
      } catch (error) {
        throw this.#fail('abort', error);
      }
    }
  }

  /** `#abortSet` where the set must end anyway: its failure is recorded already (failed-at-abort), not thrown again. */
  async #abortAndGoOn(set: ActiveSet): Promise<void> {
    try {
      await this.#abortSet(set);
    } catch {
      // #abortSet recorded it through #fail.
    }
  }

  async #endSet(set: ActiveSet): Promise<void> {
    try {
      await this.#thawOrRecord(set, 'abort');
      if (this.#definition.shutdown) {
        try {
          await this.#definition.shutdown({ setId: set.id, signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
        } catch (error) {
          this.#fail('shutdown', error);
        }
      }
    } finally {
      if (set.watchdog) clearTimeout(set.watchdog);
      if (this.#active === set) this.#active = null;
    }
  }

  /** The requester's last session closed: anything still open is undone (thaw now, abort, end the set). */
  async #sessionClosed(set: ActiveSet): Promise<void> {
    set.sessions -= 1;
    if (this.#active !== set || set.sessions > 0) return;
    if (set.frozenAt !== null) await this.#thawOrRecord(set, 'session-lost');
    if (set.step !== 'backup-complete') await this.#abortAndGoOn(set);
    await this.#endSet(set);
  }
}

function handlerContext(set: ActiveSet, callOptions?: CallOptions): HandlerContext {
  const signal = callOptions?.signal
    ? AbortSignal.any([set.controller.signal, callOptions.signal])
    : set.controller.signal;
  return { setId: set.id, signal };
}

/** A restore phase runs outside any set: only the caller's signal bounds it. */
function restoreContext(request: RestoreRequest, callOptions?: CallOptions): HandlerContext {
  return { setId: request.setId, signal: callOptions?.signal ?? new AbortController().signal };
}
