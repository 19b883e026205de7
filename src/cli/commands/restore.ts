import type { Command } from 'commander';
import { restore } from '../../backup/index.ts';
import { Catalog } from '../../catalog/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { closeWriters, composeWriters } from '../compose.ts';
import { EXIT } from '../exit-codes.ts';
import { findConfig } from '../find-config.ts';
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
export function registerRestore(program: Command): void {
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
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config);
      const lock = await repository.lock('shared');
      const writers = opts.component ? await composeWriters(config) : [];
      try {
        const catalog = await Catalog.load(repository, catalogCachePath(config, repository));
        const entry = catalog.find(ref);
        if (!entry) throw new QuiesceError('bad-usage', `no backup set ${ref} (\`quiesce backups\` lists them)`);
        let include = opts.path.map((p) => (p.startsWith('/') ? p : `/${p}`));
        let writer: (typeof writers)[number] | undefined;
        const component = opts.component
          ? entry.meta.components.find(
              (c) => c.component === opts.component || `${c.writer}/${c.component}` === opts.component,
            )
          : undefined;
        if (opts.component) {
          if (!component) {
            const known = entry.meta.components.map((c) => c.component).join(', ') || 'none';
            throw new QuiesceError(
              'bad-usage',
              `set ${entry.setId} has no component ${opts.component} (it has: ${known})`,
            );
          }
          include = [...include, ...component.files];
          writer = writers.find((w) => w.name === component.writer);
        }
        const request = {
          setId: entry.setId,
          components: component ? [component.component] : [],
          target: opts.target,
          moreFollow: false,
        };
        await writer?.endpoint.preRestore(request);
        const result = await restore({ repository, tree: entry.tree, target: opts.target, include });
        await writer?.endpoint.postRestore(request);
        if (opts.json) stdio.json({ set: entry.setId, target: opts.target, ...result });
        else {
          stdio.out(
            `restored set ${entry.setId} to ${opts.target}: ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${formatBytes(result.bytesWritten)}`,
          );
          for (const f of result.failed) stdio.err(`quiesce: could not restore ${f.path}: ${f.error.message}`);
        }
        if (result.failed.length > 0) process.exitCode = EXIT.failed;
      } finally {
        await closeWriters(writers);
        await lock.release();
        await repository.close();
      }
    });
}
