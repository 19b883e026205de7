// Running the tools a test guest needs (ip, mount, losetup, fsfreeze ...), and waiting with
// bounds. Shared by the test's side and the guest's own main process (test/fixtures/guest-main.ts).
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
/** The sbin directories too: the tools live there, and a test may run without them on PATH. */
export const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;
export const ENV = { ...process.env, PATH };

/** Runs a tool; rejects on a nonzero exit (the error carries its stderr) or after `timeoutMs`. */
export function run(file: string, args: string[], timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { env: ENV, encoding: 'utf8', timeout: timeoutMs });
}

/** Runs a tool synchronously (in an exit handler) and answers its stdout, or '' whatever went wrong. */
export function syncQuiet(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { env: ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return '';
  }
}

/** An error as one line of text, with the stderr of a failed tool. */
export function errorText(error: unknown): string {
  if (error instanceof Error) {
    const stderr = (error as Error & { stderr?: unknown }).stderr;
    return typeof stderr === 'string' && stderr.trim() !== ''
      ? `${error.message.split('\n')[0]}: ${stderr.trim()}`
      : error.message;
  }
  return String(error);
}

export const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `promise`, or a rejection after `ms` with `message` (default: "timed out after <ms> ms"),
 * whose timer never outlives it: no hanging test process.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message?: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message ?? `timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every `everyMs` until it answers true; rejects with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean> | boolean,
  everyMs = 25,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(everyMs);
  }
}
