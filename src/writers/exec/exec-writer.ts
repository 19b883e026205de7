/**
 * The built-in writer that quiesces through scripts: a freeze/thaw pair, a directory of hooks in
 * the fsfreeze-hook.d convention, or both, and an optional `prepare` script. It may name the
 * paths its service writes (`paths`): they become its components (kind `files`, one per path,
 * directories recursively), which the providers take inside its freeze.
 *
 * Order: `prepare` runs in prepare-snapshot, before any writer freezes (slow work such as a
 * CHECKPOINT belongs there); freeze runs the pair's freeze, then each hook (`hook freeze`) by
 * name; thaw runs the same steps in reverse (`hook thaw`, then the pair's thaw). A failing
 * `prepare` or freeze vetoes the set.
 *
 * Which steps are thawed: every step whose freeze was *started*, including one whose freeze
 * failed, timed out or was cancelled, because a half-done freeze (a service paused before the
 * script hung) needs undoing too, and a thaw of something not frozen is harmless where leaving
 * an application frozen is not. Thaw scripts must therefore tolerate running after a freeze
 * that did not finish. Steps after the failing one were never started and are not thawed.
 *
 * Who thaws: a guardian (thaw-guardian.ts), a shell in its own session started at
 * prepare-snapshot, runs the thaw steps exactly once: when this process asks, when this process
 * dies (a SIGKILLed `quiesce backup`), or at the thaw deadline (a stopped one). A thaw asked after
 * the guardian thawed at the deadline runs nothing again and answers `selfThawed`, so the set
 * fails honestly. Without `/bin/sh` or `timeout` this process runs the thaw steps itself.
 *
 * Scripts run without a shell, each in its own process group, with in their environment:
 * - `QUIESCE_SET_ID`, `QUIESCE_WRITER`;
 * - `QUIESCE_PHASE`: `prepare`, `freeze` or `thaw`;
 * - `QUIESCE_BACKUP_TYPE`: the set's backup type (`full`, `incremental`, `differential`, `copy`, `log`);
 * - in freeze and thaw, `QUIESCE_THAW_DEADLINE`: when the writer is thawed at the latest, an
 *   ISO-8601 UTC time (`2026-12-04T13:05:00.000Z`), and `QUIESCE_THAW_DEADLINE_MS`, the same in
 *   ms since the epoch.
 *
 * @example
 * const writer = createExecWriter({ name: 'cache', freeze: ['/usr/local/bin/cache-pause'], thaw: ['/usr/local/bin/cache-resume'], paths: ['/srv/cache'] });
 */
import { QuiesceError, type BackupType, type ErrorCode, type PrepareBackupRequest } from '../../model/index.ts';
import type { WriterMetadata } from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';
import type { HandlerContext, ThawOutcome, WriterDefinition } from '../sdk/definition.ts';
import { execMetadata, type ExecWriterOptions } from './exec-metadata.ts';
import { listHooks } from './hooks-dir.ts';
import { describeFailure, runScript, succeeded, type ScriptResult } from './run-script.ts';
import { ThawGuardian } from './thaw-guardian.ts';

export type { ExecWriterOptions } from './exec-metadata.ts';

const DEFAULT_TIMEOUT_MS = 30_000;
/** Failure messages are limited on the wire (model/failure.ts). */
const MAX_MESSAGE = 8000;

/** One thing to freeze and thaw: the pair, or one hook. */
interface Step {
  label: string;
  freeze?: string[];
  thaw?: string[];
}

interface StepFailure {
  step: Step;
  result: ScriptResult;
}

/** What one set has told the writer and what it has got ready: its type, its steps and their guardian. */
interface SetScripts {
  setId: string;
  backupType?: BackupType;
  steps?: Step[];
  guardian?: ThawGuardian;
}

/** A freeze in progress or done: the steps, how many were started, their guardian and the deadline. */
interface Frozen {
  setId: string;
  steps: Step[];
  started: number;
  guardian: ThawGuardian;
  /** The thaw deadline, ms since the epoch. */
  deadline?: number;
  /** When the freeze finished, ms since the epoch. */
  frozenAt?: number;
}

interface ThawResult {
  failures: StepFailure[];
  /** The guardian had thawed at the deadline before we asked. */
  byDeadline: boolean;
}

type ScriptPhase = 'prepare' | 'freeze' | 'thaw';

function abortCode(signal: AbortSignal): ErrorCode {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === 'TimeoutError' ? 'timeout' : 'retryable';
}

function clip(message: string): string {
  return message.length <= MAX_MESSAGE ? message : `${message.slice(0, MAX_MESSAGE - 1)}…`;
}

function failureCode(result: ScriptResult, signal: AbortSignal): ErrorCode {
  return result.timedOut ? 'timeout' : result.aborted ? abortCode(signal) : 'nonretryable';
}

export function createExecWriter(options: ExecWriterOptions): WriterDefinition {
  return new ExecWriter(options);
}

/** The scripts of one writer, and the steps whose freeze was started in the current set. */
class ExecWriter implements WriterDefinition {
  readonly metadata: WriterMetadata;
  readonly #options: ExecWriterOptions;
  readonly #timeoutMs: number;
  #set: SetScripts | undefined;
  #frozen: Frozen | undefined;

  constructor(options: ExecWriterOptions) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.metadata = execMetadata(options);
    this.#options = options;
  }

  async prepareBackup(request: PrepareBackupRequest, context: HandlerContext): Promise<void> {
    await this.#endSet();
    this.#set = { setId: context.setId, backupType: request.backupType };
  }

  /** Runs `prepare`, then lists the steps and starts their guardian, so that the freeze pays for neither. */
  async prepareSnapshot(context: HandlerContext): Promise<void> {
    const set = this.#setOf(context.setId);
    const { prepare } = this.#options;
    if (prepare) {
      const result = await runScript(prepare, {
        env: this.#environment(context.setId, 'prepare'),
        timeoutMs: this.#timeoutMs,
        signal: context.signal,
      });
      if (!succeeded(result)) {
        const line = this.#failureLine({ step: { label: `prepare script ${prepare.join(' ')}` }, result });
        const byHand = !result.timedOut && !result.aborted ? `. Run it by hand to see why: ${prepare.join(' ')}` : '';
        throw new QuiesceError(
          failureCode(result, context.signal),
          clip(`exec writer ${this.#options.name} vetoed the set in prepare-snapshot: ${line}${byHand}`),
          { writer: this.#options.name, phase: 'prepare-snapshot' },
        );
      }
    }
    await this.#ready(set);
  }

  async freeze(context: HandlerContext): Promise<void> {
    if (this.#frozen) return; // Frozen already: freeze is not repeated.
    const set = this.#setOf(context.setId);
    const { steps, guardian } = await this.#ready(set);
    set.guardian = undefined; // The freeze owns it now.
    const deadline = context.thawDeadlineMs === undefined ? undefined : Date.now() + context.thawDeadlineMs;
    const frozen: Frozen = { setId: context.setId, steps, started: 0, guardian, deadline };
    this.#frozen = frozen;
    if (deadline !== undefined) guardian.arm(deadline);
    // A freeze script still running at the deadline is cancelled: the guardian thaws then.
    const signal =
      context.thawDeadlineMs === undefined
        ? context.signal
        : AbortSignal.any([context.signal, AbortSignal.timeout(context.thawDeadlineMs)]);
    for (const [index, step] of steps.entries()) {
      if (signal.aborted) throw await this.#veto(frozen.started, undefined, abortCode(signal));
      guardian.started(index);
      frozen.started = index + 1;
      if (!step.freeze) continue;
      const result = await runScript(step.freeze, {
        env: this.#environment(context.setId, 'freeze', deadline),
        timeoutMs: this.#timeoutMs,
        signal,
        onSpawn: (pid) => guardian.running(pid),
      });
      guardian.running(undefined);
      if (succeeded(result)) continue;
      throw await this.#veto(frozen.started, { step, result }, failureCode(result, signal));
    }
    frozen.frozenAt = Date.now();
  }

  async thaw(_context: HandlerContext): Promise<void | ThawOutcome> {
    const frozen = this.#frozen;
    const { failures, byDeadline } = await this.#thawStarted();
    if (failures.length > 0) throw this.#thawError(failures);
    if (!byDeadline || !frozen) return;
    const frozenMs =
      frozen.deadline !== undefined && frozen.frozenAt !== undefined
        ? Math.max(0, frozen.deadline - frozen.frozenAt)
        : undefined;
    return frozenMs === undefined ? { selfThawed: true } : { selfThawed: true, frozenMs };
  }

  async abort(_context: HandlerContext): Promise<void> {
    await this.#endSet();
  }

  async shutdown(_context: HandlerContext): Promise<void> {
    // Nothing is held between sets; a freeze left over (it should not be) is undone here too.
    await this.#endSet();
  }

  async close(): Promise<void> {
    try {
      await this.#endSet();
    } catch {
      // Closing goes on; the failure was the set's to report.
    }
  }

  /** The current set's scripts; a set the writer has not seen yet (freeze alone, in tests) begins here. */
  #setOf(setId: string): SetScripts {
    if (this.#set?.setId !== setId) this.#set = { setId };
    return this.#set;
  }

  /** The set's steps and a guardian for them, listed and started once. */
  async #ready(set: SetScripts): Promise<{ steps: Step[]; guardian: ThawGuardian }> {
    set.steps ??= await this.#steps();
    set.guardian ??= await ThawGuardian.start({
      thaws: set.steps.map((step) => step.thaw),
      env: this.#environment(set.setId, 'thaw'),
      timeoutMs: this.#timeoutMs,
    });
    return { steps: set.steps, guardian: set.guardian };
  }

  /** Thaws what is frozen, ends a guardian nothing was started for, and forgets the set. */
  async #endSet(): Promise<void> {
    const set = this.#set;
    this.#set = undefined;
    const { failures } = await this.#thawStarted();
    await set?.guardian?.close();
    if (failures.length > 0) throw this.#thawError(failures);
  }

  #environment(setId: string, phase: ScriptPhase, deadline?: number): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...this.#options.env,
      QUIESCE_SET_ID: setId,
      QUIESCE_PHASE: phase,
      QUIESCE_WRITER: this.#options.name,
    };
    const backupType = this.#set?.setId === setId ? this.#set.backupType : undefined;
    if (backupType !== undefined) env.QUIESCE_BACKUP_TYPE = backupType;
    if (deadline !== undefined) {
      env.QUIESCE_THAW_DEADLINE = new Date(deadline).toISOString();
      env.QUIESCE_THAW_DEADLINE_MS = String(deadline);
    }
    return env;
  }

  #failureLine({ step, result }: StepFailure): string {
    const output = result.stderr || result.stdout;
    return `${step.label} ${describeFailure(result, this.#timeoutMs)}${output ? `: ${output}` : ''}`;
  }

  async #steps(): Promise<Step[]> {
    const { freeze, thaw, hooksDir, name } = this.#options;
    const list: Step[] = [];
    if (freeze !== undefined || thaw !== undefined) {
      const label = freeze ? `freeze script ${freeze.join(' ')}` : `thaw script ${thaw?.join(' ')}`;
      list.push({ label, freeze, thaw });
    }
    if (hooksDir !== undefined) {
      let hooks: string[];
      try {
        hooks = await listHooks(hooksDir);
      } catch (error) {
        throw new QuiesceError(
          'nonretryable',
          `exec writer ${name}: cannot read the hooks directory ${hooksDir} (${messageOf(error)}); check hooksDir in the config`,
          { writer: name, phase: 'freeze', cause: error },
        );
      }
      for (const hook of hooks) list.push({ label: `hook ${hook}`, freeze: [hook, 'freeze'], thaw: [hook, 'thaw'] });
    }
    return list;
  }

  /**
   * Thaws every started step, last first, whatever fails on the way: through the guardian, and
   * here for any step it did not get to (it could not start, or was killed). It does not take the
   * set's signal: a thaw that is cancelled leaves an application frozen, so each thaw script is
   * bounded by its own time limit only.
   */
  async #thawStarted(): Promise<ThawResult> {
    const current = this.#frozen;
    this.#frozen = undefined;
    if (!current) return { failures: [], byDeadline: false };
    const answer = await current.guardian.thaw();
    const failures: StepFailure[] = [];
    for (let index = current.started - 1; index >= 0; index--) {
      const step = current.steps[index];
      if (!step?.thaw) continue;
      const result =
        answer.results.get(index) ??
        (await runScript(step.thaw, {
          env: this.#environment(current.setId, 'thaw', current.deadline),
          timeoutMs: this.#timeoutMs,
        }));
      if (!succeeded(result)) failures.push({ step, result });
    }
    await current.guardian.close();
    return { failures, byDeadline: answer.reason === 'deadline' };
  }

  /**
   * The freeze's veto, after thawing the `started` steps: why (the failing step, or the cancel),
   * which thaws failed, and what to run by hand.
   */
  async #veto(started: number, failure: StepFailure | undefined, code: ErrorCode): Promise<QuiesceError> {
    const { failures: thawFailures, byDeadline } = await this.#thawStarted();
    const why = failure
      ? `${this.#failureLine(failure)}`
      : 'the freeze was cancelled (the set was aborted or its deadline passed)';
    return new QuiesceError(
      code,
      clip(
        `exec writer ${this.#options.name} vetoed the freeze: ${why}. ` +
          `The ${started} step(s) started were thawed in reverse order` +
          (byDeadline ? ' (by the guardian, at the thaw deadline)' : '') +
          (thawFailures.length > 0
            ? `, but ${thawFailures.length} thaw(s) failed: ${thawFailures.map((f) => this.#failureLine(f)).join('; ')}`
            : '') +
          (failure && !failure.result.timedOut && !failure.result.aborted
            ? `. Run it by hand to see why${failure.step.freeze ? `: ${failure.step.freeze.join(' ')}` : ''}`
            : ''),
      ),
      { writer: this.#options.name, phase: 'freeze' },
    );
  }

  #thawError(failures: StepFailure[]): QuiesceError {
    return new QuiesceError(
      'nonretryable',
      clip(
        `exec writer ${this.#options.name}: ${failures.length} thaw step(s) failed, so the application may still be frozen; ` +
          `check it and resume it by hand: ${failures.map((f) => this.#failureLine(f)).join('; ')}`,
      ),
      { writer: this.#options.name, phase: 'thaw' },
    );
  }
}
