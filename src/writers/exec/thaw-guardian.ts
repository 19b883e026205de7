// The exec writer's thaw, guaranteed by a small shell in its own session: it runs the thaw steps
// when we ask, when we die (its stdin closes) or when the thaw deadline passes (we are stopped).
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, open, rm } from 'node:fs/promises';
import { constants as osConstants, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { tailText, type ScriptResult } from './run-script.ts';

/**
 * The guardian. Its stdin carries one command a line: `arm <seconds> <iso> <ms>` (the deadline:
 * a sleeper writes `deadline` into the handler's input that many seconds later; the deadline is
 * exported to the thaw steps), `start <i>` (step i's freeze is about to start), `pid <pgid>` /
 * `ended` (the freeze script running now, killed before a thaw it did not wait for), `thaw`.
 * End-of-file (we exited or were killed) is `eof`. The first of `thaw`, `deadline` and `eof`
 * thaws the started steps, last first, each under `timeout` (its own process group, SIGTERM at
 * the limit and SIGKILL after the grace), its output in `<dir>/<i>.out|.err`; later ones do
 * nothing. It answers `thawing <reason>`, `thawed <i> <status>` per step and `done`. At `eof` it
 * removes `<dir>` and ends its process group (the sleeper with it). The shell ignores the signals
 * a terminal or a group kill sends; the steps get them back (`trap -` before exec).
 *
 * $1 output dir, $2 timeout command, $3 each step's limit (s), $4 the kill grace (s), then one
 * shell-quoted thaw command per step ('' for none).
 */
const GUARDIAN_SCRIPT = `trap '' HUP INT TERM PIPE
_q_dir=$1 _q_timeout=$2 _q_limit=$3 _q_grace=$4
shift 4
_q_n=0
for _q_s in "$@"; do eval "_q_step_$_q_n=\\$_q_s"; _q_n=$((_q_n + 1)); done
{
  while IFS= read -r _q_line; do
    case $_q_line in
      'arm '*) _q_secs=\${_q_line#arm }; _q_secs=\${_q_secs%% *}; { sleep "$_q_secs"; echo deadline; } & ;;
    esac
    printf '%s\\n' "$_q_line"
  done
  echo eof
} | {
  _q_top=-1 _q_pid= _q_done=
  _q_thaw() {
    [ -n "$_q_done" ] && return 0
    _q_done=$1
    echo "thawing $1"
    [ -n "$_q_pid" ] && kill -KILL "-$_q_pid" 2>/dev/null
    _q_i=$_q_top
    while [ "$_q_i" -ge 0 ]; do
      eval "_q_cmd=\\$_q_step_$_q_i"
      if [ -n "$_q_cmd" ]; then
        ( trap - HUP INT TERM PIPE; eval "exec \\"\\$_q_timeout\\" -k \\"\\$_q_grace\\" \\"\\$_q_limit\\" $_q_cmd" ) \\
          </dev/null >"$_q_dir/$_q_i.out" 2>"$_q_dir/$_q_i.err"
        echo "thawed $_q_i $?"
      fi
      _q_i=$((_q_i - 1))
    done
    echo done
  }
  while IFS= read -r _q_line; do
    case $_q_line in
      'arm '*)
        set -f; set -- $_q_line; set +f
        QUIESCE_THAW_DEADLINE=$3 QUIESCE_THAW_DEADLINE_MS=$4
        export QUIESCE_THAW_DEADLINE QUIESCE_THAW_DEADLINE_MS ;;
      'start '*) _q_top=\${_q_line#start } ;;
      'pid '*) _q_pid=\${_q_line#pid } ;;
      ended) _q_pid= ;;
      thaw) _q_thaw asked ;;
      deadline) _q_thaw deadline ;;
      eof) _q_thaw eof; break ;;
    esac
  done
  rm -rf "$_q_dir"
  kill -KILL 0
}`;

/** Why the guardian thawed: we asked, we were gone (stdin closed), or the deadline passed. */
export type GuardianReason = 'asked' | 'eof' | 'deadline';

export interface GuardianThaw {
  /** Null when the guardian ended without thawing (it could not start, or was killed). */
  reason: GuardianReason | null;
  /** The result of each step the guardian thawed, by step index. */
  results: Map<number, ScriptResult>;
}

export interface GuardianOptions {
  /** One thaw command per step, in freeze order (undefined: the step has no thaw). */
  thaws: (readonly string[] | undefined)[];
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** Between SIGTERM and SIGKILL of a thaw step past its limit (default 2000 ms). */
  killGraceMs?: number;
}

/** `'it'\''s'`: one argument, quoted for `eval` in the guardian. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((arg) => `'${arg.replace(/'/g, `'\\''`)}'`).join(' ');
}

/** The absolute path of `timeout` (coreutils or busybox), or null. */
async function findTimeout(): Promise<string | null> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/bin', '/usr/local/bin'];
  for (const dir of dirs.filter((d) => d.startsWith('/'))) {
    try {
      await access(join(dir, 'timeout'), constants.X_OK);
      return join(dir, 'timeout');
    } catch {
      // try the next one
    }
  }
  return null;
}

/** The last 2 KiB of a step's output file, trimmed; empty when there is none. */
async function readTail(path: string): Promise<string> {
  try {
    const file = await open(path, 'r');
    try {
      const { size } = await file.stat();
      const length = Math.min(size, 64 * 1024);
      const buffer = Buffer.alloc(length);
      await file.read(buffer, 0, length, size - length);
      return tailText(buffer);
    } finally {
      await file.close();
    }
  } catch {
    return '';
  }
}

/** A step's exit status as `timeout` reports it: 124 past the limit, 126/127 not started, 128+n a signal. */
function resultOf(status: number, stdout: string, stderr: string): ScriptResult {
  const result: ScriptResult = {
    exitCode: status,
    exitSignal: null,
    timedOut: status === 124,
    aborted: false,
    spawnError: null,
    stdout,
    stderr,
  };
  if (status === 124) result.exitCode = null;
  else if (status === 126 || status === 127) {
    result.spawnError = new Error(status === 127 ? 'not found' : 'not executable');
    result.exitCode = null;
  } else if (status > 128) {
    const signal = Object.entries(osConstants.signals).find(([, n]) => n === status - 128)?.[0];
    if (signal !== undefined) {
      result.exitSignal = signal as NodeJS.Signals;
      result.exitCode = null;
    }
  }
  return result;
}

/** One set's guardian: started before the freeze, told each step as it starts, asked to thaw once. */
export class ThawGuardian {
  readonly #child: ChildProcess | null;
  readonly #dir: string;
  readonly #exited: Promise<void>;
  #output = '';
  #waiters: (() => void)[] = [];
  #thaw: Promise<GuardianThaw> | null = null;

  private constructor(child: ChildProcess | null, dir: string) {
    this.#child = child;
    this.#dir = dir;
    child?.stdin?.on('error', () => {});
    child?.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#output += chunk;
      this.#wake();
    });
    child?.stderr?.resume();
    this.#exited = new Promise<void>((resolve) => {
      if (!child) return resolve();
      child.once('error', () => resolve());
      child.once('close', () => resolve());
    }).then(() => this.#wake());
  }

  /** Starts a guardian; without `timeout` or `/bin/sh` there is none, and thaw falls back to us. */
  static async start(options: GuardianOptions): Promise<ThawGuardian> {
    const timeout = await findTimeout();
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-thaw-'));
    if (timeout === null) return new ThawGuardian(null, dir);
    const seconds = (ms: number) => (Math.max(1, ms) / 1000).toFixed(3);
    const steps = options.thaws.map((argv) => (argv && argv.length > 0 ? shellQuote(argv) : ''));
    const args = [dir, timeout, seconds(options.timeoutMs), seconds(options.killGraceMs ?? 2000), ...steps];
    const child = spawn('/bin/sh', ['-c', GUARDIAN_SCRIPT, 'quiesce-thaw-guardian', ...args], {
      detached: true,
      cwd: '/',
      env: options.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new ThawGuardian(child, dir);
  }

  /** The guardian thaws by itself at `deadline` (ms since the epoch), whatever happens to us. */
  arm(deadline: number): void {
    const seconds = (Math.max(0, deadline - Date.now()) / 1000).toFixed(3);
    this.#send(`arm ${seconds} ${new Date(deadline).toISOString()} ${deadline}`);
  }

  /** Step `index`'s freeze is about to start: from now on it is thawed. */
  started(index: number): void {
    this.#send(`start ${index}`);
  }

  /** The freeze script running now leads process group `pgid`; `undefined` when it ended. */
  running(pgid: number | undefined): void {
    this.#send(pgid === undefined ? 'ended' : `pid ${pgid}`);
  }

  /**
   * Asks for the thaw (idempotent) and waits until it is done or the guardian is gone. `reason`
   * says who thawed: `asked` is us; `deadline` means it had thawed on its own before we asked.
   */
  thaw(): Promise<GuardianThaw> {
    this.#thaw ??= this.#thawOnce();
    return this.#thaw;
  }

  /** Ends the guardian (it thaws first if it has not) and removes its output directory. */
  async close(): Promise<void> {
    if (this.#child?.stdin && !this.#child.stdin.destroyed) this.#child.stdin.end();
    await this.#exited;
    await rm(this.#dir, { recursive: true, force: true });
  }

  #send(line: string): void {
    const stdin = this.#child?.stdin;
    if (stdin && !stdin.destroyed && stdin.writable) stdin.write(`${line}\n`);
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  #gone(): boolean {
    const child = this.#child;
    return !child || child.exitCode !== null || child.signalCode !== null || child.stdout?.readableEnded === true;
  }

  async #thawOnce(): Promise<GuardianThaw> {
    this.#send('thaw');
    while (!/^done$/m.test(this.#output) && !this.#gone()) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    const lines = this.#output.split('\n');
    const reason = lines.find((line) => line.startsWith('thawing '))?.slice('thawing '.length);
    const results = new Map<number, ScriptResult>();
    for (const line of lines) {
      const match = /^thawed (\d+) (\d+)$/.exec(line);
      if (!match) continue;
      const index = Number(match[1]);
      const [stdout, stderr] = await Promise.all([
        readTail(join(this.#dir, `${index}.out`)),
        readTail(join(this.#dir, `${index}.err`)),
      ]);
      results.set(index, resultOf(Number(match[2]), stdout, stderr));
    }
    const known = reason === 'asked' || reason === 'eof' || reason === 'deadline';
    return { reason: known ? reason : null, results };
  }
}
