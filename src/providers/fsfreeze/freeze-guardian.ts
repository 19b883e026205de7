import { spawn } from 'node:child_process';
import type { CallOptions } from '../../model/index.ts';
import { abortedFailure, providerFailed } from '../provider-error.ts';

/**
 * The guardian is a tiny shell in its own session that freezes, tells us, and thaws as soon as
 * it reads a line or end-of-file on stdin, or after a timeout. Our end of its stdin closes when
 * we exit or are killed, so a frozen file system never outlives us or the timeout. It ignores
 * the signals a terminal or a process-group kill would send; `timeout -s KILL` is needed because
 * `head` inherits the ignored TERM.
 *
 * $1 mount point, $2 fsfreeze, $3 timeout command, $4 seconds.
 */
const GUARDIAN_SCRIPT = `trap '' HUP INT TERM PIPE
"$2" -f "$1" || exit 1
echo frozen
"$3" -s KILL "$4" head -n 1 >/dev/null
"$2" -u "$1" || exit 2
echo thawed`;

export interface FreezeGuardianOptions extends CallOptions {
  /** The guardian thaws by itself this long after the freeze, whatever happens to us. */
  maxFrozenMs: number;
  /** Absolute paths of `fsfreeze` and `timeout`. */
  fsfreeze: string;
  timeout: string;
}

/** A file system frozen by a guardian process. */
export interface FreezeGuardian {
  readonly mountPoint: string;
  /** True when the guardian thawed before `thaw` was called: the copy is not from one frozen moment. */
  readonly thawedEarly: boolean;
  /** Thaws (idempotent) and waits for the guardian to exit; fails when fsfreeze -u failed. */
  thaw(): Promise<void>;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Freezes the file system mounted at `mountPoint` and resolves once it is frozen. If `signal`
 * aborts first, the guardian is told to thaw, we wait for it, and the promise rejects.
 */
export async function freezeWithGuardian(mountPoint: string, options: FreezeGuardianOptions): Promise<FreezeGuardian> {
  const seconds = String(Math.max(1, Math.ceil(options.maxFrozenMs / 1000)));
  const child = spawn(
    '/bin/sh',
    ['-c', GUARDIAN_SCRIPT, 'quiesce-freeze-guardian', mountPoint, options.fsfreeze, options.timeout, seconds],
    {
      detached: true,
      cwd: '/',
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  let thawRequested = false;
  let frozenSeen = false;
  let exitedUnasked = false;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  // The guardian may be gone when we write; its exit code tells what happened.
  child.stdin.on('error', () => {});

  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (error) => {
      stderr += `${error.message}\n`;
      resolve({ code: null, signal: null });
    });
    child.once('close', (code, signal) => {
      exitedUnasked = !thawRequested;
      resolve({ code, signal });
    });
  });

  const requestThaw = (): void => {
    thawRequested = true;
    if (!child.stdin.destroyed) child.stdin.end('thaw\n');
  };

  const thaw = async (): Promise<void> => {
    requestThaw();
    const { code, signal } = await exited;
    if (code === 0) return;
    if (code === 1 && !frozenSeen) return; // never froze, nothing to thaw
    throw providerFailed(
      `thawing ${mountPoint} failed (${describeExit(code, signal)}): ${stderr.trim() || 'no message'}. ` +
        `Check with \`fsfreeze -u ${mountPoint}\` that the file system is writable.`,
    );
  };

  const frozen = new Promise<boolean>((resolve) => {
    const onData = (): void => {
      if (stdout.includes('frozen\n')) {
        frozenSeen = true;
        child.stdout.off('data', onData);
        resolve(true);
      }
    };
    child.stdout.on('data', onData);
    void exited.then(() => resolve(stdout.includes('frozen\n')));
  });

  const onAbort = (): void => requestThaw();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) requestThaw();
  try {
    const ok = await frozen;
    if (options.signal?.aborted) {
      await exited;
      throw abortedFailure(options.signal, `freezing ${mountPoint}`);
    }
    if (!ok) {
      const { code, signal } = await exited;
      throw providerFailed(
        `freezing ${mountPoint} failed (${describeExit(code, signal)}): ${stderr.trim() || 'no message'}. ` +
          'If it is already frozen by another tool, thaw it with `fsfreeze -u`; otherwise use another provider.',
      );
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }

  return {
    mountPoint,
    get thawedEarly() {
      return exitedUnasked;
    },
    thaw,
  };
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal === null ? `exit ${String(code)}` : `killed by ${signal}`;
}
