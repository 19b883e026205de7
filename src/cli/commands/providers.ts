import type { Command } from 'commander';
import { lstat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { QuiesceError } from '../../model/index.ts';
import { createProviders, listProviderSupport } from '../../providers/index.ts';
import type { ProviderSupport } from '../../model/index.ts';
import { closeWriters, composeWriters, forcedFor } from '../compose.ts';
import { findConfig } from '../find-config.ts';
import { stdio, table } from '../output.ts';
import { isErrno } from '../../util/index.ts';

/** `quiesce providers [PATH...]`: which provider serves each path, and why the others don't. */
export function registerProviders(program: Command): void {
  program
    .command('providers')
    .description('show which snapshot provider serves each path, and why the others do not')
    .argument('[paths...]', 'paths to check (default: every path of the config)')
    .option('-c, --config <file>', 'config file')
    .option('--json', 'print JSON')
    .action(async (args: string[], opts: { config?: string; json?: boolean }) => {
      const config = await findConfig(opts.config);
      let paths = args.map((p) => resolve(p));
      await mustExist(paths);
      if (paths.length === 0) {
        const writers = await composeWriters(config);
        try {
          const files = await Promise.all(
            writers.map(async (w) => {
              try {
                const m = await w.endpoint.identify({ signal: AbortSignal.timeout(5_000) });
                return m.components.flatMap((c) => c.files.map((f) => f.path));
              } catch {
                return [];
              }
            }),
          );
          paths = [...new Set([...files.flat(), ...config.paths])];
        } finally {
          await closeWriters(writers);
        }
      }
      const providers = createProviders();
      const results = await Promise.all(
        paths.map(async (path) => {
          const forced = forcedFor(config, path);
          const candidates = await listProviderSupport(path, providers);
          const chosen = forced ?? candidates.find((c) => c.support.ok)?.name ?? null;
          return { path, chosen, forced: forced ?? null, candidates };
        }),
      );
      if (opts.json) {
        stdio.json({ paths: results });
        return;
      }
      if (results.length === 0) {
        stdio.out('no paths: name some, or give a config with writers or paths');
        return;
      }
      const rows = results.flatMap((r) =>
        r.candidates.map((c) => [
          r.path,
          c.name,
          c.name === r.chosen
            ? r.forced
              ? c.support.ok
                ? 'forced'
                : 'FORCED, UNUSABLE'
              : 'chosen'
            : c.support.ok
              ? 'usable'
              : 'no',
          c.support.ok ? c.support.level : '-',
          c.support.reason,
        ]),
      );
      stdio.out(table(['PATH', 'PROVIDER', 'USE', 'LEVEL', 'WHY'], rows));
      for (const path of results.filter((r) => chosenLevel(r) === 'inconsistent').map((r) => r.path)) {
        stdio.out(
          `${path}: inconsistent unless a frozen writer owns it (each file as it was when read, not one point in time); for one point in time put it on btrfs (crash), on a file system fsfreeze can freeze (filesystem), or under a writer that holds its writers still (application)`,
        );
      }
    });
}

/** The level the chosen provider gives the path by itself. */
function chosenLevel(result: { chosen: string | null; candidates: { name: string; support: ProviderSupport }[] }) {
  return result.candidates.find((c) => c.name === result.chosen && c.support.ok)?.support.level;
}

/** Paths named on the command line must exist: a provider for a path that is not there answers nothing true. */
async function mustExist(paths: string[]): Promise<void> {
  const missing: string[] = [];
  for (const path of paths) {
    try {
      await lstat(path);
    } catch (error) {
      if (!isErrno(error, 'ENOENT', 'ENOTDIR')) throw error;
      missing.push(path);
    }
  }
  if (missing.length > 0)
    throw new QuiesceError('bad-usage', `no such file or directory: ${missing.join(', ')}; name paths that exist`);
}
