import { setMaxListeners } from 'node:events';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  QuiesceError,
  componentKey,
  failedAt,
  lowestConsistency,
  usageRank,
  type BackupType,
  type ComponentPlan,
  type ComponentReport,
  type ComponentResult,
  type ConsistencyLevel,
  type Failure,
  type GuestReport,
  type Phase,
  type Provider,
  type ProviderSnapshot,
  type QuiescePolicy,
  type SetEvent,
  type SetReport,
  type SetStatus,
  type SnapshotPath,
  type KnownFiles,
  type UnchangedFile,
  type SnapshotReport,
  type WriterEndpoint,
  type WriterMetadata,
  type WriterReport,
  type WriterSession,
  type WriterState,
} from '../model/index.ts';
import { EventLog } from './event-log.ts';
import { acquireSetLock } from './set-lock.ts';
import { newSetId } from './set-id.ts';
import { recordWriterOutcomes } from './writer-history.ts';

/** A writer taking part in a set, with its quiesce policy. */
export interface SetWriter {
  name: string;
  endpoint: WriterEndpoint;
  policy: QuiescePolicy;
}

/** The provider chosen for a path, with the consistency its snapshot has on its own. */
export interface ResolvedProvider {
  provider: Provider;
  level: 'crash' | 'filesystem';
}

/** One component as the requester sees it after the snapshot: where to read it and how. */
export interface SnapshotComponent {
  writer: string;
  component: string;
  kind: 'database' | 'files';
  /** The original files of the component (paths of its metadata). */
  files: WriterMetadata['components'][number]['files'];
  actualType: BackupType;
  consistency: ConsistencyLevel;
  result: ComponentResult | null;
}

/** What the `use` callback sees: the set id, every snapshot path, and every component. */
export interface SnapshotView {
  setId: string;
  snapshots: SnapshotPath[];
  /** Files the providers left out because `knownFiles` holds them unchanged. */
  unchanged: UnchangedFile[];
  components: SnapshotComponent[];
  /** Map an original path to where it can be read in the snapshot, or null if it is not in the set. */
  resolve(original: string): string | null;
  /** The set's report as it stands (freeze window, commit, writers, consistency), for a manifest saved now. */
  report(): SetReport;
  /** The metadata of every writer that identified itself (what restore needs to know of it). */
  writers: WriterMetadata[];
}

export interface UseOutcome {
  /** Components (writer/component key) whose backup failed; the rest succeeded. */
  failedComponents?: { writer: string; component: string; error: Failure }[];
  /** A failure of the use as a whole (e.g. the command exited non-zero): the set fails. */
  error?: QuiesceError;
  stats?: Partial<SetReport['stats']>;
}

export interface SnapshotSetOptions {
  kind: 'snapshot' | 'backup';
  backupType: BackupType;
  writers: SetWriter[];
  /** Paths taken with no writer: crash or filesystem level. */
  paths: string[];
  stateDir: string;
  stagingDir: string;
  resolveProvider: (path: string) => Promise<ResolvedProvider>;
  /** The stamp of the backup a component's incremental/differential builds on. */
  previousStamp?: (writer: string, component: string, type: BackupType) => string | undefined;
  freezeTimeoutMs?: number;
  commitTimeoutMs?: number;
  /** Deadline of every other writer call (identify, prepare, post-snapshot, ...). */
  callTimeoutMs?: number;
  /** Keep the snapshot after the set ends (`--keep`). */
  keep?: boolean;
  /** Wait this long for another set on this host to finish instead of failing with `set-in-progress`. */
  waitForLockMs?: number;
  /** Read the snapshot (run the command, store the backup) while the applications run again. */
  use?: (view: SnapshotView, signal: AbortSignal) => Promise<UseOutcome | void>;
  onEvent?: (event: SetEvent) => void;
  signal?: AbortSignal;
  setId?: string;
  /**
   * Holds the set between prepare-backup and prepare-snapshot until it resolves (a guest's set
   * waits here for its host's prepare-snapshot); it sees the report so far, with every
   * component's negotiated type. A rejection fails the set.
   */
  beforePrepareSnapshot?: (report: () => SetReport) => Promise<void>;
  /**
   * False when the snapshot cannot be read where this set runs (a guest's: the host holds the
   * images), so writers get no post-snapshot and hand out no stamp. Default true.
   */
  postSnapshot?: boolean;
  /**
   * Files the requester already holds (a backup's parent set): providers that copy file by file
   * leave out the plain-path files that still match. Never applied to a writer's component file.
   */
  knownFiles?: KnownFiles;
}

/** A set kept with `--keep`: what `releaseKeptSet` needs. */
export interface KeptSet {
  setId: string;
  createdAt: string;
  snapshots: ProviderSnapshot[];
}

/** Per-writer bookkeeping across the phases. */
interface Participant {
  writer: SetWriter;
  metadata: WriterMetadata | null;
  session: WriterSession | null;
  plans: Map<string, ComponentPlan>;
  results: Map<string, ComponentResult>;
  /** Took part in prepare-backup: gets abort on failure. */
  prepared: boolean;
  /** Freeze succeeded and thaw has not yet been asked. */
  frozen: boolean;
  quiesced: boolean;
  /** What its freeze reached: `filesystem` for a writer that freezes file systems alone (thaw says so). */
  level: 'application' | 'filesystem' | 'crash';
  frozenAt: number | null;
  freezeWindowMs: number | null;
  error: QuiesceError | null;
  /** Dropped out of quiescing (its policy is prefer or off): its files are still captured, at a lower level. */
  degraded: boolean;
  state: WriterState;
}

const DEFAULTS = { freezeTimeoutMs: 60_000, commitTimeoutMs: 10_000, callTimeoutMs: 60_000 };

/**
 * Runs one snapshot set through every phase of MODEL.md:
 * identify, prepare-backup, prepare-snapshot, freeze (front-end, back-end, system), commit,
 * thaw, post-snapshot, use, backup-complete, shutdown.
 *
 * Thaw is guaranteed three ways: the `finally` path here, a timer that thaws every writer when
 * the freeze-to-thaw deadline passes, and the watchdog in each writer's own process (armed by
 * the deadline passed in freeze, and by the session that closes when this process dies).
 */
export async function runSnapshotSet(options: SnapshotSetOptions): Promise<SetReport> {
  const freezeTimeoutMs = options.freezeTimeoutMs ?? DEFAULTS.freezeTimeoutMs;
  const commitTimeoutMs = options.commitTimeoutMs ?? DEFAULTS.commitTimeoutMs;
  const callTimeoutMs = options.callTimeoutMs ?? DEFAULTS.callTimeoutMs;
  const setId = options.setId ?? newSetId();
  const startedAt = new Date();
  const log = new EventLog(options.stateDir, setId, options.onEvent);
  const lock = await acquireSetLock(options.stateDir, setId, { waitMs: options.waitForLockMs, signal: options.signal });
  // Deadlines use AbortSignal.timeout, whose timers do not hold the process open; while a set
  // runs, this does, so that a deadline always fires even when every writer has gone quiet.
  const keepAlive = setInterval(() => undefined, 60_000);

  const participants: Participant[] = options.writers.map((writer) => ({
    writer,
    metadata: null,
    session: null,
    plans: new Map(),
    results: new Map(),
    prepared: false,
    frozen: false,
    quiesced: false,
    level: 'application',
    frozenAt: null,
    freezeWindowMs: null,
    error: null,
    degraded: writer.policy === 'off',
    state: 'stable',
  }));
  const snapshots: ProviderSnapshot[] = [];
  const snapshotLevels = new Map<string, 'crash' | 'filesystem'>();
  /** Every snapshot path taken, for the report (the snapshots themselves may be released by then). */
  const taken: { provider: string; original: string; snapshot: string }[] = [];
  const benign: Failure[] = [];
  let setError: QuiesceError | null = null;
  let commitMs: number | null = null;
  let committed = false;
  let useOutcome: UseOutcome | void = undefined;
  let setFreezeStart: number | null = null;
  let setFreezeEnd: number | null = null;
  let kept = false;
  /** Read through a function: the closures below assign setError, which flow analysis cannot see. */
  const throwIfFailed = (): void => {
    const error = setError;
    if (error) throw error;
  };
  const setAbort = new AbortController();
  const setSignal = options.signal ? AbortSignal.any([setAbort.signal, options.signal]) : setAbort.signal;
  let freezeTimer: NodeJS.Timeout | null = null;
  const freezeDeadline = new AbortController();
  // Every call of every writer listens on these; 50 writers are not a leak.
  setMaxListeners(0, setAbort.signal, setSignal, freezeDeadline.signal);

  const deadline = (ms: number): AbortSignal => AbortSignal.any([setSignal, AbortSignal.timeout(ms)]);

  /** Runs one writer call with events, a deadline and failure bookkeeping. */
  async function call<T>(
    p: Participant,
    phase: Phase,
    signal: AbortSignal,
    body: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const t0 = log.elapsed();
    log.emit({ phase, writer: p.writer.name, event: 'start' });
    try {
      const value = await untilAborted(body(signal), signal);
      log.emit({ phase, writer: p.writer.name, event: 'end', durationMs: log.elapsed() - t0, result: 'ok' });
      return value;
    } catch (raw) {
      let error = QuiesceError.from(raw, 'nonretryable', { phase, writer: p.writer.name });
      if (signal.aborted) {
        const reason: unknown = signal.reason;
        // A set aborted by someone else cancels this call; a deadline means this writer was too slow.
        error =
          reason instanceof QuiesceError && reason.code !== 'timeout'
            ? new QuiesceError('retryable', `${phase} of writer ${p.writer.name} was cancelled: ${reason.message}`, {
                phase,
                writer: p.writer.name,
                cause: raw,
              })
            : new QuiesceError(
                'not-responding',
                `writer ${p.writer.name} did not answer ${phase} in time; is its process alive and responsive?`,
                { phase, writer: p.writer.name, cause: raw },
              );
      }
      log.emit({ phase, writer: p.writer.name, event: 'fail', durationMs: log.elapsed() - t0, error: error.toJSON() });
      throw error;
    }
  }

  /** Record a writer's failure; under `require` it fails the set, otherwise the writer degrades. */
  function writerFailed(p: Participant, error: QuiesceError): void {
    p.error ??= error;
    p.state = failedAt(error.phase ?? 'identify');
    p.degraded = true;
    if (p.writer.policy === 'require' && !setError) {
      setError = new QuiesceError(
        error.code,
        `writer ${p.writer.name} failed at ${error.phase ?? 'identify'} (${error.code}) and its policy is require: ${error.message}`,
        {
          phase: error.phase,
          writer: p.writer.name,
          component: error.component,
          cause: error,
        },
      );
      setAbort.abort(setError);
    }
  }

  const active = (): Participant[] => participants.filter((p) => !p.degraded && p.metadata !== null);

  async function thawOne(p: Participant, reason: string): Promise<void> {
    if (!p.frozen) return;
    p.frozen = false;
    try {
      // Thaw must get through even when the set is aborted: its own deadline only.
      const response = await call(p, 'thaw', AbortSignal.timeout(callTimeoutMs), (signal) =>
        p.writer.endpoint.thaw({ setId }, { signal }),
      );
      p.level = response.consistency ?? 'application';
      if (response.selfThawed) {
        writerFailed(
          p,
          new QuiesceError(
            'timeout',
            `writer ${p.writer.name} thawed itself after ${Math.round(response.frozenMs)} ms: the freeze window (${freezeTimeoutMs} ms) ran out before ${reason}`,
            { phase: 'thaw', writer: p.writer.name },
          ),
        );
      }
    } catch (error) {
      writerFailed(p, QuiesceError.from(error, 'nonretryable', { phase: 'thaw', writer: p.writer.name }));
    } finally {
      p.freezeWindowMs = p.frozenAt === null ? null : performance.now() - p.frozenAt;
    }
  }

  /** Thaw every frozen writer in reverse application order (system, back-end, front-end). */
  async function thawAll(reason: string): Promise<void> {
    const frozen = participants.filter((p) => p.frozen);
    for (const group of groupsByUsage(frozen).reverse()) {
      await Promise.all(group.map((p) => thawOne(p, reason)));
    }
    if (setFreezeStart !== null && setFreezeEnd === null) setFreezeEnd = performance.now();
  }

  async function abortAll(): Promise<void> {
    await Promise.all(
      participants
        .filter((p) => p.prepared)
        .map(async (p) => {
          try {
            await call(p, 'abort', AbortSignal.timeout(callTimeoutMs), (signal) =>
              p.writer.endpoint.abort({ setId }, { signal }),
            );
          } catch {
            // Logged; abort is best effort on top of the writer's own watchdog.
          }
        }),
    );
  }

  async function releaseSnapshots(): Promise<void> {
    for (const snapshot of snapshots.splice(0)) {
      const t0 = log.elapsed();
      try {
        const provider = providersUsed.get(snapshot.provider);
        await provider?.release(snapshot, { signal: AbortSignal.timeout(callTimeoutMs) });
        log.emit({
          phase: 'shutdown',
          provider: snapshot.provider,
          event: 'end',
          durationMs: log.elapsed() - t0,
          result: 'released',
        });
      } catch (error) {
        log.emit({
          phase: 'shutdown',
          provider: snapshot.provider,
          event: 'fail',
          error: QuiesceError.from(error, 'provider-failed').toJSON(),
        });
      }
    }
  }

  const providersUsed = new Map<string, Provider>();

  try {
    log.emit({
      phase: 'identify',
      event: 'info',
      result: `set ${setId}: ${options.kind}, type ${options.backupType}, ${participants.length} writer(s), ${options.paths.length} path(s)`,
    });

    // 1. identify, and tie each writer's watchdog to this process with a session.
    await Promise.all(
      participants.map(async (p) => {
        try {
          p.metadata = await call(p, 'identify', deadline(callTimeoutMs), (signal) =>
            p.writer.endpoint.identify({ signal }),
          );
          p.session = await p.writer.endpoint.openSession({ setId });
        } catch (error) {
          writerFailed(p, QuiesceError.from(error, 'nonretryable', { phase: 'identify', writer: p.writer.name }));
        }
      }),
    );
    throwIfFailed();

    // 2. prepare-backup: the type, the components and their previous stamps; the writer answers with the type it honours.
    await Promise.all(
      participants
        .filter((p) => p.metadata !== null)
        .map(async (p) => {
          const metadata = p.metadata!;
          const components = metadata.components.map((c) => {
            const key = componentKey(c);
            const stamp = options.previousStamp?.(p.writer.name, key, options.backupType);
            return stamp === undefined ? { component: key } : { component: key, previousStamp: stamp };
          });
          p.prepared = true;
          try {
            const response = await call(p, 'prepare-backup', deadline(callTimeoutMs), (signal) =>
              p.writer.endpoint.prepareBackup({ setId, backupType: options.backupType, components }, { signal }),
            );
            for (const plan of response.components) p.plans.set(plan.component, plan);
          } catch (error) {
            writerFailed(
              p,
              QuiesceError.from(error, 'nonretryable', { phase: 'prepare-backup', writer: p.writer.name }),
            );
          }
        }),
    );
    throwIfFailed();
    if (options.beforePrepareSnapshot) {
      await untilAborted(options.beforePrepareSnapshot(buildReport), setSignal);
      throwIfFailed();
    }

    // Which paths the set captures, and which provider takes each.
    const capture = new Set<string>(options.paths);
    for (const p of participants)
      for (const c of p.metadata?.components ?? []) for (const f of c.files) capture.add(f.path);
    const byProvider = new Map<Provider, { level: 'crash' | 'filesystem'; paths: string[] }>();
    for (const path of capture) {
      const resolved = await options.resolveProvider(path);
      providersUsed.set(resolved.provider.name, resolved.provider);
      const entry = byProvider.get(resolved.provider) ?? { level: resolved.level, paths: [] };
      entry.paths.push(path);
      byProvider.set(resolved.provider, entry);
    }
    const stagingDir = options.stagingDir;
    const componentFiles = new Set(
      participants.flatMap((p) => (p.metadata?.components ?? []).flatMap((c) => c.files.map((f) => f.path))),
    );
    const known =
      options.knownFiles === undefined ? undefined : withoutComponentFiles(options.knownFiles, componentFiles);
    for (const [provider, entry] of byProvider) {
      const t0 = log.elapsed();
      await provider.prepare({ setId, paths: entry.paths, stagingDir }, { signal: deadline(callTimeoutMs) });
      log.emit({
        phase: 'prepare-snapshot',
        provider: provider.name,
        event: 'end',
        durationMs: log.elapsed() - t0,
        result: `${entry.paths.length} path(s)`,
      });
    }

    // 3. prepare-snapshot: the slow part (checkpoints, flushes), in parallel.
    await Promise.all(
      active().map(async (p) => {
        try {
          await call(p, 'prepare-snapshot', deadline(callTimeoutMs), (signal) =>
            p.writer.endpoint.prepareSnapshot({ setId }, { signal }),
          );
        } catch (error) {
          writerFailed(
            p,
            QuiesceError.from(error, 'nonretryable', { phase: 'prepare-snapshot', writer: p.writer.name }),
          );
        }
      }),
    );
    throwIfFailed();

    // 4. freeze, in application order; the freeze window starts with the first freeze.
    setFreezeStart = performance.now();
    freezeTimer = setTimeout(() => {
      freezeDeadline.abort(
        new QuiesceError('timeout', `the freeze window of ${freezeTimeoutMs} ms ran out before the commit finished`, {
          phase: 'commit',
        }),
      );
      // The coordinator's own timer: thaw now, whatever the commit is doing.
      thawAll('the commit finished').catch(() => undefined);
    }, freezeTimeoutMs);
    const freezeSignal = AbortSignal.any([setSignal, freezeDeadline.signal]);
    setMaxListeners(0, freezeSignal);
    for (const group of groupsByUsage(active())) {
      await Promise.all(
        group.map(async (p) => {
          try {
            await call(p, 'freeze', freezeSignal, (signal) =>
              p.writer.endpoint.freeze({ setId, thawDeadlineMs: freezeTimeoutMs }, { signal }),
            );
            p.frozen = true;
            p.frozenAt = performance.now();
          } catch (error) {
            writerFailed(p, QuiesceError.from(error, 'nonretryable', { phase: 'freeze', writer: p.writer.name }));
            // A writer that failed its freeze is thawed and aborted at once; the others go on under prefer.
            await abortOne(p);
          }
        }),
      );
      if (setError || freezeDeadline.signal.aborted) break;
    }
    throwIfFailed();
    if (freezeDeadline.signal.aborted) throw freezeDeadline.signal.reason as QuiesceError;

    // 5. commit: every provider snapshots its paths, inside every freeze window.
    const commitSignal = AbortSignal.any([setSignal, freezeDeadline.signal, AbortSignal.timeout(commitTimeoutMs)]);
    const commitStart = performance.now();
    log.emit({ phase: 'commit', event: 'start' });
    try {
      await Promise.all(
        [...byProvider].map(async ([provider, entry]) => {
          const t0 = log.elapsed();
          const snapshot = await provider.commit(
            { setId, paths: entry.paths, stagingDir, ...(known ? { known } : {}) },
            { signal: commitSignal },
          );
          snapshots.push(snapshot);
          for (const path of snapshot.paths) {
            snapshotLevels.set(path.original, entry.level);
            taken.push({ provider: provider.name, ...path });
          }
          log.emit({
            phase: 'commit',
            provider: provider.name,
            event: 'end',
            durationMs: log.elapsed() - t0,
            result: `${snapshot.paths.length} path(s)`,
          });
        }),
      );
      if (freezeDeadline.signal.aborted) throw freezeDeadline.signal.reason as QuiesceError;
    } catch (raw) {
      let error = QuiesceError.from(raw, 'provider-failed', { phase: 'commit' });
      if (freezeDeadline.signal.aborted) error = freezeDeadline.signal.reason as QuiesceError;
      else if (commitSignal.aborted && !setSignal.aborted)
        error = new QuiesceError(
          'timeout',
          `the commit took longer than its deadline of ${commitTimeoutMs} ms; raise policy.commitTimeout or use a faster provider (btrfs, reflink)`,
          { phase: 'commit', cause: raw },
        );
      log.emit({ phase: 'commit', event: 'fail', durationMs: performance.now() - commitStart, error: error.toJSON() });
      setError ??= error;
      throw error;
    }
    commitMs = performance.now() - commitStart;
    committed = true;
    log.emit({ phase: 'commit', event: 'end', durationMs: commitMs, result: `${snapshots.length} snapshot(s)` });

    // 6. thaw, in reverse order.
    await thawAll('the commit finished');
    if (freezeTimer) clearTimeout(freezeTimer);
    throwIfFailed();
    // Froze, committed inside the window, thawed on the coordinator's word: application-consistent.
    for (const p of participants) p.quiesced = !p.degraded && p.error === null && p.freezeWindowMs !== null;

    // 7. post-snapshot: stamps and partial files. A failure here is benign: it comes after thaw and a good commit.
    const snapshotPaths = snapshots.flatMap((s) => s.paths);
    await Promise.all(
      participants
        .filter((p) => p.prepared && p.error === null && options.postSnapshot !== false)
        .map(async (p) => {
          try {
            const response = await call(p, 'post-snapshot', deadline(callTimeoutMs), (signal) =>
              p.writer.endpoint.postSnapshot({ setId, snapshots: snapshotPaths }, { signal }),
            );
            for (const result of response.components) p.results.set(result.component, result);
          } catch (error) {
            benign.push({
              ...QuiesceError.from(error, 'nonretryable', { phase: 'post-snapshot', writer: p.writer.name }).toJSON(),
              benign: true,
            });
          }
        }),
    );

    // 8. the requester reads the snapshot while the applications run.
    if (options.use) {
      const t0 = log.elapsed();
      log.emit({ phase: 'post-snapshot', event: 'start', result: 'use' });
      useOutcome = await options.use(buildView(), setSignal);
      if (useOutcome?.error) {
        log.emit({
          phase: 'post-snapshot',
          event: 'fail',
          durationMs: log.elapsed() - t0,
          error: useOutcome.error.toJSON(),
        });
        // The snapshot was good; what used it failed. The set fails, but consistency stands.
        setError = useOutcome.error;
      } else {
        log.emit({ phase: 'post-snapshot', event: 'end', durationMs: log.elapsed() - t0, result: 'use' });
      }
    }

    // 9. backup-complete, per component with its success flag (writers move bases only for succeeded, non-copy ones).
    const failedInUse = new Set((useOutcome?.failedComponents ?? []).map((f) => `${f.writer}\0${f.component}`));
    await Promise.all(
      participants
        .filter((p) => p.prepared && p.metadata !== null && p.error === null)
        .map(async (p) => {
          const components = p.metadata!.components.map((c) => {
            const key = componentKey(c);
            const plan = p.plans.get(key);
            const stamp = p.results.get(key)?.newStamp;
            return {
              component: key,
              actualType: plan?.actualType ?? options.backupType,
              succeeded: setError === null && !failedInUse.has(`${p.writer.name}\0${key}`),
              ...(stamp === undefined ? {} : { stamp }),
            };
          });
          try {
            await call(p, 'backup-complete', deadline(callTimeoutMs), (signal) =>
              p.writer.endpoint.backupComplete({ setId, backupType: options.backupType, components }, { signal }),
            );
          } catch (error) {
            benign.push({
              ...QuiesceError.from(error, 'nonretryable', { phase: 'backup-complete', writer: p.writer.name }).toJSON(),
              benign: true,
            });
          }
        }),
    );
  } catch (raw) {
    setError ??= QuiesceError.from(raw, 'nonretryable');
  } finally {
    if (freezeTimer) clearTimeout(freezeTimer);
    // Thaw and abort are structural: whatever happened above, nothing stays frozen.
    await thawAll('the set failed');
    if (setError) await abortAll();
    if (options.keep && setError === null && snapshots.length > 0) {
      await saveKeptSet(options.stateDir, { setId, createdAt: startedAt.toISOString(), snapshots });
      kept = true;
    } else {
      await releaseSnapshots();
    }
    await Promise.all(
      participants.map(async (p) => {
        if (p.metadata !== null) {
          await call(p, 'shutdown', AbortSignal.timeout(callTimeoutMs), (signal) =>
            p.writer.endpoint.shutdown({ setId }, { signal }),
          ).catch(() => undefined);
        }
        await p.session?.close().catch(() => undefined);
      }),
    );
    await lock.release();
    clearInterval(keepAlive);
  }

  function buildView(): SnapshotView {
    const paths = snapshots.flatMap((s) => s.paths);
    const resolve = (original: string): string | null => resolveSnapshotPath(paths, original);
    const writers = participants.flatMap((p) => (p.metadata ? [p.metadata] : []));
    const unchanged = snapshots.flatMap((s) => s.unchanged ?? []);
    return { setId, snapshots: paths, unchanged, components: componentsOf(), resolve, report: buildReport, writers };
  }

  function componentsOf(): SnapshotComponent[] {
    return participants.flatMap((p) =>
      (p.metadata?.components ?? []).map((c) => {
        const key = componentKey(c);
        return {
          writer: p.writer.name,
          component: key,
          kind: c.kind,
          files: c.files,
          actualType: p.plans.get(key)?.actualType ?? options.backupType,
          consistency: componentConsistency(
            p,
            c.files.map((f) => f.path),
          ),
          result: p.results.get(key) ?? null,
        };
      }),
    );
  }

  async function abortOne(p: Participant): Promise<void> {
    if (p.frozen) await thawOne(p, 'the freeze failed');
    await call(p, 'abort', AbortSignal.timeout(callTimeoutMs), (signal) =>
      p.writer.endpoint.abort({ setId }, { signal }),
    ).catch(() => undefined);
  }

  function componentConsistency(p: Participant, files: string[]): ConsistencyLevel {
    if (!committed) return 'none';
    if (p.quiesced) return p.level;
    const present = files.flatMap((f) => snapshotLevels.get(f) ?? []);
    return present.length > 0 ? lowestConsistency(present) : 'crash';
  }

  /** The report as it stands; `use` sees it before backup-complete (the set has not failed so far). */
  function buildReport(): SetReport {
    const finishedAt = new Date();
    const failedByUse = new Map(
      (useOutcome?.failedComponents ?? []).map((f) => [`${f.writer}\0${f.component}`, f.error]),
    );
    const components: ComponentReport[] = participants.flatMap((p) =>
      (p.metadata?.components ?? []).map((c) => {
        const key = componentKey(c);
        const plan = p.plans.get(key);
        const consistency = componentConsistency(
          p,
          c.files.map((f) => f.path),
        );
        const useFailure = failedByUse.get(`${p.writer.name}\0${key}`) ?? null;
        const error = useFailure ?? (p.error ? { ...p.error.toJSON(), component: p.error.component ?? key } : null);
        // A component that fell back below what its writer reaches under `prefer` is never plainly successful.
        const fellBack = p.error !== null || (!p.quiesced && p.writer.policy !== 'off');
        const status: SetStatus = setError || useFailure ? 'failed' : fellBack ? 'partial' : 'succeeded';
        return {
          writer: p.writer.name,
          component: key,
          requestedType: options.backupType,
          actualType: plan?.actualType ?? options.backupType,
          typeReason: plan?.typeReason ?? null,
          consistency,
          status,
          error,
        };
      }),
    );
    const writers: WriterReport[] = participants.map((p) => ({
      name: p.writer.name,
      classId: p.metadata?.classId ?? 'unknown',
      instanceId: p.metadata?.instanceId ?? 'unknown',
      state: p.error ? p.state : 'stable',
      consistency: p.metadata ? componentConsistency(p, pathsOf(p)) : 'none',
      freezeWindowMs: p.freezeWindowMs === null ? null : round(p.freezeWindowMs),
      error: p.error ? p.error.toJSON() : null,
    }));
    const snapshotReports: SnapshotReport[] = taken.map((s) => {
      const owner = participants.find((p) => pathsOf(p).includes(s.original));
      const level: ConsistencyLevel = owner?.quiesced ? 'application' : (snapshotLevels.get(s.original) ?? 'crash');
      return { ...s, consistency: level };
    });
    const plainLevels: ConsistencyLevel[] = options.paths.map((path) =>
      committed ? (snapshotLevels.get(path) ?? 'crash') : 'none',
    );
    const levels = [...components.map((c) => c.consistency), ...plainLevels];
    const consistency: ConsistencyLevel = !committed ? 'none' : levels.length > 0 ? lowestConsistency(levels) : 'crash';
    const anyDegraded = participants.some((p) => p.error !== null) || components.some((c) => c.status !== 'succeeded');
    const status: SetStatus = setError ? 'failed' : anyDegraded ? 'partial' : 'succeeded';
    const finalError = setError;
    return {
      id: setId,
      kind: options.kind,
      requestedType: options.backupType,
      status,
      consistency,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      freezeWindowMs: setFreezeStart !== null && setFreezeEnd !== null ? round(setFreezeEnd - setFreezeStart) : null,
      commitMs: commitMs === null ? null : round(commitMs),
      error: finalError ? finalError.toJSON() : null,
      benign,
      writers,
      components,
      snapshots: snapshotReports,
      guests: guestReports(),
      kept,
      stats: {
        files: 0,
        bytesRead: 0,
        bytesAdded: 0,
        durationMs: finishedAt.getTime() - startedAt.getTime(),
        ...useOutcome?.stats,
      },
    };
  }

  const report = buildReport();
  log.emit({ phase: 'shutdown', event: 'info', result: `${report.status}, consistency ${report.consistency}` });
  await recordWriterOutcomes(options.stateDir, report).catch(() => undefined);
  return report;

  /**
   * The nested reports of writers that stand for guests. What the host saw bounds what the guest
   * says: a guest whose images the commit did not capture is `none`, one the host dropped to
   * crash is `crash`, whatever the guest itself reached.
   */
  function guestReports(): GuestReport[] {
    return participants.flatMap((p) => {
      const guest = p.writer.endpoint.guestReport?.();
      if (!guest) return [];
      const hostLevel = p.metadata ? componentConsistency(p, pathsOf(p)) : 'none';
      const hostError = p.error ? p.error.toJSON() : null;
      const failed = setError !== null;
      return [
        {
          ...guest,
          // A guest whose own set failed captured nothing itself ('none'), but the host took its images anyway.
          consistency: guest.consistency === 'none' ? hostLevel : lowestConsistency([guest.consistency, hostLevel]),
          status: failed ? 'failed' : hostError || guest.status !== 'succeeded' ? 'partial' : guest.status,
          error: guest.error ?? hostError,
          // The guest reports when it froze by the wall clock; the report counts from the set's start.
          frozenAtMs: guest.frozenAtMs === null ? null : round(guest.frozenAtMs - startedAt.getTime()),
        },
      ];
    });
  }

  function pathsOf(p: Participant): string[] {
    return (p.metadata?.components ?? []).flatMap((c) => c.files.map((f) => f.path));
  }
}

/**
 * The call's answer, or a rejection as soon as its signal aborts. A writer that ignores the
 * signal cannot hold the set: the coordinator stops waiting and calls it not-responding; the
 * writer's own watchdog and the later abort undo whatever that call still does.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** Writers grouped by application order: front-end, back-end, system. */
function groupsByUsage<T extends { metadata: WriterMetadata | null }>(items: T[]): T[][] {
  const groups: T[][] = [[], [], []];
  for (const item of items) groups[usageRank(item.metadata?.usage ?? 'back-end')]!.push(item);
  return groups.filter((g) => g.length > 0);
}

/** Where an original path (or a file below an original directory) is in the snapshot. */
export function resolveSnapshotPath(paths: SnapshotPath[], original: string): string | null {
  let best: SnapshotPath | null = null;
  for (const entry of paths) {
    if (
      original === entry.original ||
      original.startsWith(entry.original.endsWith('/') ? entry.original : `${entry.original}/`)
    ) {
      if (!best || entry.original.length > best.original.length) best = entry;
    }
  }
  if (!best) return null;
  return best.snapshot + original.slice(best.original.length);
}

async function saveKeptSet(stateDir: string, kept: KeptSet): Promise<void> {
  const dir = join(stateDir, 'sets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${kept.setId}.json`);
  await writeFile(`${path}.tmp`, JSON.stringify(kept, null, 2), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

/** `known` minus whatever the writers' components name (files, or directories and all below): those are always captured. */
function withoutComponentFiles(known: KnownFiles, componentFiles: ReadonlySet<string>): KnownFiles {
  if (componentFiles.size === 0) return known;
  const within = (dir: string) => [...componentFiles].some((path) => dir === path || dir.startsWith(`${path}/`));
  return {
    async inDirectory(originalDir, options) {
      if (within(originalDir)) return null;
      const files = await known.inDirectory(originalDir, options);
      if (files === null) return null;
      const prefix = originalDir === '/' ? '/' : `${originalDir}/`;
      return new Map([...files].filter(([name]) => !componentFiles.has(`${prefix}${name}`)));
    },
  };
}
