// The real command line as a test runs it: bin/quiesce.js in a child process, and the plain
// config most command-line tests start from.
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const QUIESCE_BIN = fileURLToPath(new URL('../../bin/quiesce.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `quiesce ARGS` to its end (at most two minutes) with `env` over this process's environment. */
export function runQuiesce(args: string[], env: Record<string, string> = {}): CliResult {
  const result = spawnSync(process.execPath, [QUIESCE_BIN, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `DIR/NAME.yaml`: a repository, state and staging directories of its own, and plain `paths`. */
export async function writePlainConfig(dir: string, name: string, paths: string[], repo: string): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `repository: ${repo}`,
      `stateDir: ${join(dir, `${name}-state`)}`,
      `stagingDir: ${join(dir, `${name}-staging`)}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${paths.join(', ')}]`,
    ].join('\n'),
  );
  return file;
}
