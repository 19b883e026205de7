import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { CallOptions } from '../model/index.ts';
import { abortedFailure, providerFailed } from './provider-error.ts';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions extends CallOptions {
  /** Appended to the failure message: what the operator should do about it. */
  hint?: string;
}

/**
 * Runs `file` with `args` (no shell) in the C locale. A non-zero exit becomes a provider failure
 * that quotes the command and its stderr; an abort kills the command.
 */
export function runCommand(file: string, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const commandLine = [file, ...args].join(' ');
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        signal: options.signal,
        env: { ...process.env, LC_ALL: 'C' },
        maxBuffer: 16 * 1024 * 1024,
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr });
          return;
        }
        if (options.signal?.aborted) {
          reject(abortedFailure(options.signal, `\`${commandLine}\``));
          return;
        }
        const why =
          'code' in error && error.code === 'ENOENT'
            ? 'command not found'
            : stderr.trim() || `exit ${String(error.code ?? error.signal)}`;
        const hint = options.hint === undefined ? '' : ` ${options.hint}`;
        reject(providerFailed(`\`${commandLine}\` failed: ${why}.${hint}`, error));
      },
    );
  });
}

/**
 * The absolute path of the executable `name` on PATH or in the sbin directories (which a root
 * shell has but a service's PATH may lack), or null when there is none.
 */
export async function findCommand(name: string): Promise<string | null> {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/local/sbin',
    '/usr/sbin',
    '/sbin',
    '/usr/bin',
    '/bin',
  ];
  for (const dir of dirs) {
    if (!dir.startsWith('/')) continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  return null;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}
