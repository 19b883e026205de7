/**
 * The built-in writer that quiesces through scripts: a freeze/thaw pair, a directory of hooks in
 * the fsfreeze-hook.d convention, or both. It owns no files (no components); it only holds an
 * application still while the snapshot is taken.
 *
 * Order: freeze runs the pair's freeze, then each hook (`hook freeze`) by name; thaw runs the
 * same steps in reverse (`hook thaw`, then the pair's thaw).
 *
 * Which steps are thawed: every step whose freeze was *started*, including one whose freeze
 * failed, timed out or was cancelled, because a half-done freeze (a service paused before the
 * script hung) needs undoing too, and a thaw of something not frozen is harmless where leaving
 * an application frozen is not. Thaw scripts must therefore tolerate running after a freeze
 * that did not finish. Steps after the failing one were never started and are not thawed.
 *
 * Scripts run without a shell, each in its own process group, with `QUIESCE_SET_ID`,
 * `QUIESCE_PHASE` (`freeze` or `thaw`) and `QUIESCE_WRITER` in their environment.
 *
 * @example
 * const writer = createExecWriter({ name: 'cache', freeze: ['/usr/local/bin/cache-pause'], thaw: ['/usr/local/bin/cache-resume'] });
 */
import {
  BACKUP_TYPES,
  QuiesceError,
  WriterMetadataSchema,
  type ErrorCode,
  type WriterMetadata,
  type WriterUsage,
} from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';
import type { HandlerContext, WriterDefinition } from '../sdk/definition.ts';
import { listHooks } from './hooks-dir.ts';
import { describeFailure, runScript, succeeded, type ScriptResult } from './run-script.ts';

export interface ExecWriterOptions {
  name: string;
  /** The freeze command, as argv (no shell). */
  freeze?: string[];
  /** The thaw command, as argv (no shell). */
  thaw?: string[];
  /** A directory of hooks, each called with `freeze` or `thaw`. */
  hooksDir?: string;
  /** The time limit of each script (default 30 000 ms). */
  timeoutMs?: number;
  /** Freeze order among writers (default `front-end`). */
  usage?: WriterUsage;
  /** Added to the scripts' environment. */
  env?: Record<string, string>;
}

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

function abortCode(signal: AbortSignal): ErrorCode {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === 'TimeoutError' ? 'timeout' : 'retryable';
}

function clip(message: string): string {
  return message.length <= MAX_MESSAGE ? message : `${message.slice(0, MAX_MESSAGE - 1)}…`;
}

export function createExecWriter(options: ExecWriterOptions): WriterDefinition {
  return new ExecWriter(options);
}

/** The writer's metadata: no components, every backup type; `bad-config` without anything to run. */
function execMetadata(options: ExecWriterOptions): WriterMetadata {
  const instanceId = options.hooksDir ?? options.freeze?.[0] ?? options.thaw?.[0];
  const emptyArgv = [options.freeze, options.thaw].some((argv) => argv !== undefined && argv.length === 0);
  if (instanceId === undefined || emptyArgv) {
    throw new QuiesceError(
      'bad-config',
      `exec writer ${options.name}: give a freeze and thaw command, a hooksDir, or both`,
      {
        writer: options.name,
      },
    );
  }
  const parsed = WriterMetadataSchema.safeParse({
    name: options.name,
    classId: 'quiesce.exec',
    instanceId,
    usage: options.usage ?? 'front-end',
    components: [],
    backupTypes: [...BACKUP_TYPES],
  });
  if (!parsed.success) {
    throw new QuiesceError(
      'bad-config',
      `exec writer ${options.name}: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/** The scripts of one writer, and the steps whose freeze was started in the current set. */
class ExecWriter implements WriterDefinition {
  readonly metadata: WriterMetadata;
  readonly #options: ExecWriterOptions;
  readonly #timeoutMs: number;
  /** The steps whose freeze was started, in freeze order, and the set they belong to. */
  #frozen: { setId: string; started: Step[] } | undefined;

  constructor(options: ExecWriterOptions) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.metadata = execMetadata(options);
    this.#options = options;
  }

  async freeze(context: HandlerContext): Promise<void> {
    if (this.#frozen) return; // Frozen already: freeze is not repeated.
    const list = await this.#steps();
    const frozen = { setId: context.setId, started: [] as Step[] };
    this.#frozen = frozen;
    for (const step of list) {
      if (context.signal.aborted) throw await this.#veto(frozen.started.length, undefined, abortCode(context.signal));
      frozen.started.push(step);
      if (!step.freeze) continue;
      const result = await runScript(step.freeze, {
        env: this.#environment(context.setId, 'freeze'),
        timeoutMs: this.#timeoutMs,
        signal: context.signal,
      });
      if (succeeded(result)) continue;
      const code: ErrorCode = result.timedOut ? 'timeout' : result.aborted ? abortCode(context.signal) : 'nonretryable';
      throw await this.#veto(frozen.started.length, { step, result }, code);
    }
  }

  async thaw(_context: HandlerContext): Promise<void> {
    const failures = await this.#thawStarted();
    if (failures.length > 0) throw this.#thawError(failures);
  }

  async abort(_context: HandlerContext): Promise<void> {
    const failures = await this.#thawStarted();
    if (failures.length > 0) throw this.#thawError(failures);
  }

  async shutdown(_context: HandlerContext): Promise<void> {
    // Nothing is held between sets; a freeze left over (it should not be) is undone here too.
    const failures = await this.#thawStarted();
    if (failures.length > 0) throw this.#thawError(failures);
  }

  async close(): Promise<void> {
    await this.#thawStarted();
  }

  #environment(setId: string, phase: 'freeze' | 'thaw'): NodeJS.ProcessEnv {
    return {
      ...process.env,
      ...this.#options.env,
      QUIESCE_SET_ID: setId,
      QUIESCE_PHASE: phase,
      QUIESCE_WRITER: this.#options.name,
    };
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
   * Thaws every started step, last first, whatever fails on the way. It does not take the set's
   * signal: a thaw that is cancelled leaves an application frozen, so each thaw script is bounded
   * by its own time limit only.
   */
  async #thawStarted(): Promise<StepFailure[]> {
    const current = this.#frozen;
    this.#frozen = undefined;
    if (!current) return [];
    const failures: StepFailure[] = [];
    for (const step of [...current.started].reverse()) {
      if (!step.thaw) continue;
      const result = await runScript(step.thaw, {
        env: this.#environment(current.setId, 'thaw'),
        timeoutMs: this.#timeoutMs,
      });
      if (!succeeded(result)) failures.push({ step, result });
    }
    return failures;
  }

  /**
   * The freeze's veto, after thawing the `started` steps: why (the failing step, or the cancel),
   * which thaws failed, and what to run by hand.
   */
  async #veto(started: number, failure: StepFailure | undefined, code: ErrorCode): Promise<QuiesceError> {
    const thawFailures = await this.#thawStarted();
    const why = failure
      ? `${this.#failureLine(failure)}`
      : 'the freeze was cancelled (the set was aborted or its deadline passed)';
    return new QuiesceError(
      code,
      clip(
        `exec writer ${this.#options.name} vetoed the freeze: ${why}. ` +
          `The ${started} step(s) started were thawed in reverse order` +
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
