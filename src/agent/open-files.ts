// The agent's file-descriptor limit (RLIMIT_NOFILE): raised to its hard limit at start, best
// effort, and reported. Node cannot call setrlimit; prlimit (util-linux) can, for our own pid.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface OpenFilesLimit {
  soft: number;
  hard: number;
  /** The soft limit before it was raised, when it was. */
  raisedFrom?: number;
}

/** `Max open files  <soft>  <hard>  files` of /proc/<pid>/limits; `unlimited` as Infinity. */
export function parseOpenFiles(limits: string): { soft: number; hard: number } | undefined {
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(limits);
  if (!match) return undefined;
  const value = (text: string) => (text === 'unlimited' ? Infinity : Number(text));
  return { soft: value(match[1]!), hard: value(match[2]!) };
}

async function current(): Promise<{ soft: number; hard: number } | undefined> {
  try {
    return parseOpenFiles(await readFile('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Raise this process's soft RLIMIT_NOFILE to its hard limit (`prlimit --pid <us> --nofile=H:H`)
 * and answer the limit then in force; undefined where /proc does not tell (not Linux). Node
 * usually raised it already at start; a prlimit that is missing or fails changes nothing.
 */
export async function raiseOpenFilesLimit(): Promise<OpenFilesLimit | undefined> {
  const before = await current();
  if (before === undefined || before.soft >= before.hard || !Number.isFinite(before.hard)) return before;
  try {
    await execFileAsync('prlimit', ['--pid', String(process.pid), `--nofile=${before.hard}:${before.hard}`], {
      env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin' },
      timeout: 5000,
    });
  } catch {
    return before;
  }
  const after = (await current()) ?? before;
  return after.soft > before.soft ? { ...after, raisedFrom: before.soft } : after;
}

/** `open files 1048576` or `open files 4096 (raised from 1024)`. */
export function describeOpenFiles(limit: OpenFilesLimit | undefined): string {
  if (limit === undefined) return 'open files: unknown';
  const soft = Number.isFinite(limit.soft) ? String(limit.soft) : 'unlimited';
  return `open files ${soft}${limit.raisedFrom === undefined ? '' : ` (raised from ${limit.raisedFrom})`}`;
}
