import type { SnapshotLevel } from '../model/index.ts';
import { setMaxListeners } from 'node:events';
import {
  QuiesceError,
  failedAt,
  type Failure,
  type KnownFiles,
  type Phase,
  type Provider,
  type ProviderSnapshot,
} from '../model/index.ts';
import { EventLog } from './event-log.ts';
import { isDegraded, newParticipant, type Participant } from './participant.ts';
import type { SnapshotSetOptions, UseOutcome } from './set-options.ts';
import { cleanDeadSets } from './dead-set-cleanup.ts';
import { saveRunningSet } from './running-sets.ts';
import { processStart } from '../util/index.ts';
import { acquireSetLock } from './set-lock.ts';
import { newSetId } from './set-id.ts';

const DEFAULTS = { freezeTimeoutMs: 60_000, commitTimeoutMs: 10_000, callTimeoutMs: 60_000 };

/** The paths one provider takes, and the consistency its snapshot has on its own. */
export interface ProviderShare {
  level: SnapshotLevel;
  paths: string[];
}

/** One snapshot path taken, kept for the report (the snapshot itself may be released by then). */
export interface SnapshotRecord {
  provider: string;
  original: string;
  snapshot: string;
}

/** The state of one set as its phases run: what every phase reads and writes. */
export interface SetRun {
  readonly options: SnapshotSetOptions;
  readonly setId: string;
  readonly startedAt: Date;
  readonly freezeTimeoutMs: number;
  readonly commitTimeoutMs: number;
  /** Deadline of every other writer call (identify, prepare, post-snapshot, ...). */
  readonly callTimeoutMs: number;
  readonly log: EventLog;
  readonly lock: { release(): Promise<void> };
  readonly keepAlive: NodeJS.Timeout;
  readonly participants: Participant[];
  /** Which provider takes each path captured inside the freeze (planned before prepare-snapshot). */
  readonly byProvider: Map<Provider, ProviderShare>;
  /** Which provider copies each path of a component readable after thaw, once the writers run again. */
  readonly afterThaw: Map<Provider, ProviderShare>;
  /** Plain paths read in place after thaw, with no copy: `inconsistent`. */
  readonly livePaths: string[];
  readonly providersUsed: Map<string, Provider>;
  /** `options.knownFiles` without the writers' component files, which are always captured. */
  known: KnownFiles | undefined;
  /** The snapshots held, until they are released or kept. */
  readonly snapshots: ProviderSnapshot[];
  readonly snapshotLevels: Map<string, SnapshotLevel>;
  readonly snapshotRecords: SnapshotRecord[];
  readonly benignFailures: Failure[];
  /** The set's failure: once set, the remaining phases are skipped and the set is aborted. */
  error: QuiesceError | null;
  committed: boolean;
  commitMs: number | null;
  /** From the first writer's freeze to the last one's thaw, on `performance.now()`. */
  freezeStart: number | null;
  freezeEnd: number | null;
  freezeTimer: NodeJS.Timeout | null;
  useOutcome: UseOutcome | void;
  kept: boolean;
  /** Aborted when the set fails: every call in flight stops. */
  readonly abort: AbortController;
  /** The set's abort and the caller's signal. */
  readonly signal: AbortSignal;
  /** Aborted when the freeze window runs out before the commit finished. */
  readonly freezeDeadline: AbortController;
}

/** Takes the host's set lock and sets up the state of a new set. */
export async function startSetRun(options: SnapshotSetOptions): Promise<SetRun> {
  const setId = options.setId ?? newSetId();
  const startedAt = new Date();
  const log = new EventLog(options.stateDir, setId, options.onEvent);
  const lock = await acquireSetLock(options.stateDir, setId, { waitMs: options.waitForLockMs, signal: options.signal });
  await startRecord(options, setId, startedAt, log);
  // Deadlines use AbortSignal.timeout, whose timers do not hold the process open; while a set
  // runs, this does, so that a deadline always fires even when every writer has gone quiet.
  const keepAlive = setInterval(() => undefined, 60_000);
  const abort = new AbortController();
  const signal = options.signal ? AbortSignal.any([abort.signal, options.signal]) : abort.signal;
  const freezeDeadline = new AbortController();
  // Every call of every writer listens on these; 50 writers are not a leak.
  setMaxListeners(0, abort.signal, signal, freezeDeadline.signal);
  return {
    options,
    setId,
    startedAt,
    freezeTimeoutMs: options.freezeTimeoutMs ?? DEFAULTS.freezeTimeoutMs,
    commitTimeoutMs: options.commitTimeoutMs ?? DEFAULTS.commitTimeoutMs,
    callTimeoutMs: options.callTimeoutMs ?? DEFAULTS.callTimeoutMs,
    log,
    lock,
    keepAlive,
    participants: options.writers.map(newParticipant),
    byProvider: new Map(),
    afterThaw: new Map(),
    livePaths: [],
    providersUsed: new Map(),
    known: undefined,
    snapshots: [],
    snapshotLevels: new Map(),
    snapshotRecords: [],
    benignFailures: [],
    error: null,
    committed: false,
    commitMs: null,
    freezeStart: null,
    freezeEnd: null,
    freezeTimer: null,
    useOutcome: undefined,
    kept: false,
    abort,
    signal,
    freezeDeadline,
  };
}

/**
 * With the lock held: what dead sets left is cleaned up, then this set is recorded as running.
 * Neither may fail the set; a failure is logged (and the next set tries again).
 */
async function startRecord(options: SnapshotSetOptions, setId: string, startedAt: Date, log: EventLog): Promise<void> {
  try {
    await cleanDeadSets(options, setId, log);
  } catch (error) {
    log.emit({ phase: 'identify', event: 'fail', error: QuiesceError.from(error, 'nonretryable').toJSON() });
  }
  await recordRunning({ options, setId, startedAt, log, byProvider: new Map() });
}

/** Records the set as running (its process, staging directory and providers' paths) for the cleanup after a crash. */
export async function recordRunning(
  run: Pick<SetRun, 'options' | 'setId' | 'startedAt' | 'log' | 'byProvider'> & Partial<Pick<SetRun, 'afterThaw'>>,
): Promise<void> {
  const shares = [...run.byProvider, ...(run.afterThaw ?? [])].map(([provider, share]) => ({
    provider: provider.name,
    paths: share.paths,
  }));
  const record = {
    pid: process.pid,
    start: processStart(process.pid),
    setId: run.setId,
    startedAt: run.startedAt.toISOString(),
    stagingDir: run.options.stagingDir,
    shares,
  };
  await saveRunningSet(run.options.stateDir, record).catch((error: unknown) =>
    run.log.emit({ phase: 'identify', event: 'fail', error: QuiesceError.from(error, 'nonretryable').toJSON() }),
  );
}

export function throwIfFailed(run: SetRun): void {
  if (run.error) throw run.error;
}

/** The writers still quiescing: identified, and neither failed nor off. */
export function activeParticipants(run: SetRun): Participant[] {
  return run.participants.filter((p) => !isDegraded(p) && p.metadata !== null);
}

/** Record a writer's failure; under `require` it fails the set, otherwise the writer degrades. */
export function failWriter(run: SetRun, p: Participant, error: QuiesceError): void {
  p.error ??= error;
  p.writerState = failedAt(error.phase ?? 'identify');
  if (p.writer.policy === 'require' && !run.error) {
    run.error = new QuiesceError(
      error.code,
      `writer ${p.writer.name} failed at ${error.phase ?? 'identify'} (${error.code}) and its policy is require: ${error.message}`,
      {
        phase: error.phase,
        writer: p.writer.name,
        component: error.component,
        cause: error,
      },
    );
    run.abort.abort(run.error);
  }
}

/**
 * Reports a failure that must not change the set's outcome (cleanup after the fact) as a `fail`
 * event of `phase`.
 */
export function reportCleanupFailure(run: SetRun, phase: Phase, raw: unknown, writer?: string): void {
  const error = QuiesceError.from(raw, 'nonretryable', { phase, writer: writer ?? null });
  try {
    run.log.emit({ phase, writer, event: 'fail', error: error.toJSON() });
  } catch {
    // The event log itself failed (its directory is gone, or the listener threw): nowhere is left to report to.
  }
}

/** Records a failure after a good commit and a complete thaw: listed, lowering nothing. */
export function benignFailure(run: SetRun, error: QuiesceError): void {
  run.benignFailures.push({ ...error.toJSON(), benign: true });
}
