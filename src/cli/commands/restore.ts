import type { Command } from 'commander';
import { restoreSet } from '../../backup/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { closeWriters, composeWriters } from '../compose.ts';
import { EXIT } from '../exit-codes.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { formatBytes, stdio } from '../output.ts';
import { catalogCachePath, openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

interface RestoreFlags extends RepositoryFlags {
  config?: string;
  component?: string;
  path: string[];
  target?: string;
  json?: boolean;
}

/**
 * `quiesce restore SET [--component W/C | --path P] --target DIR`: the whole set, one component,
 * or files and directories, below DIR (original /srv/a lands at DIR/srv/a). For a component whose
 * writer is configured here, its pre-restore and post-restore run around the files.
 */
export function registerRestore(program: Command, interrupt: Interrupt): void {
  program
    .command('restore')
    .description('restore a backup set, a component or paths into a target directory')
    .argument('<set>', 'set id (or a unique prefix, or "latest")')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--component <component>', 'restore one component (writer/component, as `quiesce show` lists it)')
    .option(
      '--path <path>',
      'restore one original file or directory (repeatable)',
      (value: string, all: string[]) => [...all, value],
      [],
    )
    .option('--target <dir>', 'where to restore (required)')
    .option('--json', 'print JSON')
    .action(async (ref: string, opts: RestoreFlags) => {
      if (!opts.target)
        throw new QuiesceError(
          'bad-usage',
          'restore needs --target DIR; quiesce never restores over the originals by itself',
        );
      const { signal } = interrupt;
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      const writers = opts.component ? await composeWriters(config) : [];
      try {
        const result = await restoreSet({
          repository,
          catalogCache: catalogCachePath(config, repository),
          ref,
          target: opts.target,
          component: opts.component,
          paths: opts.path,
          writers,
          signal,
        });
        const { setId, ...restored } = result;
        if (opts.json) stdio.json({ set: setId, target: opts.target, ...restored });
        else {
          stdio.out(
            `restored set ${setId} to ${opts.target}: ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${result.special > 0 ? `${result.special} special files, ` : ''}${formatBytes(result.bytesWritten)}`,
          );
          for (const s of result.skipped) stdio.err(`quiesce: skipped ${s.path}: ${s.reason}`);
          for (const f of result.failed) stdio.err(`quiesce: could not restore ${f.path}: ${f.error.message}`);
        }
        if (result.failed.length > 0) process.exitCode = EXIT.failed;
      } finally {
        await closeWriters(writers);
        await repository.close();
      }
    });
}
