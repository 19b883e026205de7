/**
 * Runs one freeze or thaw script with a time limit. The script gets its own process group, so a
 * timeout or a cancellation ends everything it started (SIGTERM to the group, SIGKILL 2 s later),
 * not only the shell at its top.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ScriptResult {
  /** Exit code, or null when the script was ended by a signal or never started. */
  exitCode: number | null;
  /** The signal that ended it, if any. */
  exitSignal: NodeJS.Signals | null;
  /** It ran past its time limit and its group was killed. */
  timedOut: boolean;
  /** The caller's signal aborted it and its group was killed. */
  aborted: boolean;
  /** It could not be started (ENOENT, EACCES…). */
  spawnError: Error | null;
  /** The last 2 KiB of what it wrote, trimmed. */
  stderr: string;
  stdout: string;
}

export interface RunScriptOptions {
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  signal?: AbortSignal;
  /** How long the group gets between SIGTERM and SIGKILL (default 2000 ms). */
  killGraceMs?: number;
  /** Called with the script's pid (its process group) once it runs. */
  onSpawn?: (pid: number) => void;
}

/** How much output is kept while the script runs, and how much is reported. */
const KEEP_BYTES = 64 * 1024;
const TAIL_BYTES = 2048;
const GROUP_POLL_MS = 25;
/** After the script exits, how long to wait for its output pipes to drain (a background child may hold them). */
const DRAIN_MS = 200;

class Tail {
  private chunks: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - (this.chunks[0]?.length ?? 0) >= KEEP_BYTES) this.bytes -= this.chunks.shift()!.length;
  }

  text(): string {
    return tailText(Buffer.concat(this.chunks));
  }
}

/** What is reported of a script's output: its last 2 KiB, trimmed, `…` in front when cut. */
export function tailText(output: Buffer): string {
  const text = output.toString('utf8').trim();
  const buffer = Buffer.from(text, 'utf8');
  if (buffer.length <= TAIL_BYTES) return text;
  const tail = buffer
    .subarray(buffer.length - TAIL_BYTES)
    .toString('utf8')
    .replace(/^\uFFFD+/, '');
  return `…${tail}`;
}

/**
 * Whether any process of the group still runs. A group of zombies counts as gone: its members
 * are dead, only not yet reaped (a container's init may reap orphans late).
 */
async function groupAlive(pgid: number): Promise<boolean> {
  try {
    process.kill(-pgid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  let entries: string[];
  try {
    entries = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  } catch {
    return true;
  }
  const states = await Promise.all(
    entries.map(async (name) => {
      try {
        const stat = await readFile(`/proc/${name}/stat`, 'utf8');
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return Number(pgrp) === pgid && state !== 'Z';
      } catch {
        return false; // Gone while we looked.
      }
    }),
  );
  return states.some(Boolean);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** SIGTERM to the whole group, then SIGKILL to whatever is left of it after `graceMs`. */
export async function killGroup(pid: number, graceMs: number): Promise<void> {
  signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await groupAlive(pid))) return;
    await sleep(GROUP_POLL_MS);
  }
  signalGroup(pid, 'SIGKILL');
}

/** Runs `argv` (no shell). Never rejects: the result says what happened. */
export async function runScript(argv: readonly string[], options: RunScriptOptions): Promise<ScriptResult> {
  const [file, ...args] = argv;
  const stdout = new Tail();
  const stderr = new Tail();
  const result = (partial: Partial<ScriptResult>): ScriptResult => ({
    exitCode: null,
    exitSignal: null,
    timedOut: false,
    aborted: false,
    spawnError: null,
    stdout: stdout.text(),
    stderr: stderr.text(),
    ...partial,
  });
  if (file === undefined) return result({ spawnError: new Error('empty command') });
  if (options.signal?.aborted) return result({ aborted: true });

  return new Promise<ScriptResult>((resolvePromise) => {
    // detached: the child leads a new process group (and session), so -pid reaches all it starts.
    const child = spawn(file, args, { env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));

    let timedOut = false;
    let aborted = false;
    let killing: Promise<void> | undefined;
    let settled = false;
    const kill = () => {
      if (child.pid !== undefined && !killing) killing = killGroup(child.pid, options.killGraceMs ?? 2000);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, options.timeoutMs);
    const onAbort = () => {
      aborted = true;
      kill();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });

    const finish = (partial: Partial<ScriptResult>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      void (async () => {
        // A killed script's group must be gone before the caller goes on (to thaw, or to report).
        if (killing) await killing;
        resolvePromise(result({ timedOut, aborted: aborted && !timedOut, ...partial }));
      })();
    };

    child.on('error', (error) => finish({ spawnError: error }));
    child.on('exit', (exitCode, exitSignal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      // Let the pipes deliver the last output, but do not wait on a background child that keeps them open.
      const drained = new Promise<void>((resolveDrain) => child.on('close', () => resolveDrain()));
      void Promise.race([drained, sleep(DRAIN_MS)]).then(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish({ exitCode, exitSignal });
      });
    });
  });
}

/** One line saying how a failed run ended. */
export function describeFailure(result: ScriptResult, timeoutMs: number): string {
  if (result.spawnError)
    return `could not be started (${result.spawnError.message}); check the path and that it is executable`;
  if (result.timedOut)
    return `did not finish within ${timeoutMs} ms, so its process group was killed; make it faster or raise the writer's timeout`;
  if (result.aborted)
    return 'was cancelled (the set was aborted or its deadline passed), so its process group was killed';
  if (result.exitSignal) return `was killed by ${result.exitSignal}`;
  return `exited with code ${result.exitCode ?? '?'}`;
}

export function succeeded(result: ScriptResult): boolean {
  return result.exitCode === 0 && !result.timedOut && !result.aborted && result.spawnError === null;
}
