import type { Command } from 'commander';
import { Catalog } from '../../catalog/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { resolveConfig } from '../load-config.ts';
import { formatReport, stdio, table } from '../output.ts';
import { bytes } from '../progress.ts';
import { catalogCache, useRepository, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce backups` lists the sets; `quiesce show SET` shows one: components, types, chains, report, events. */
export function registerBackups(program: Command): void {
  program
    .command('backups')
    .description('list the backup sets in the repository')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--json', 'print JSON')
    .action(async (opts: RepositoryFlags & { config?: string; json?: boolean }) => {
      const config = await resolveConfig(opts.config);
      const repository = await useRepository(opts, config);
      try {
        const catalog = await Catalog.load(repository, catalogCache(config, repository));
        const sets = catalog.all();
        if (opts.json) {
          stdio.json({
            sets: sets.map((e) => ({ id: e.setId, manifest: e.manifestId, time: e.time, type: e.meta.requestedType, status: e.meta.status, consistency: e.meta.consistency, tags: e.meta.tags, host: e.meta.hostname, stats: e.meta.report.stats, components: e.meta.components })),
          });
          return;
        }
        if (sets.length === 0) {
          stdio.out('no backup sets');
          return;
        }
        stdio.out(
          table(
            ['SET', 'TIME', 'TYPE', 'STATUS', 'CONSISTENCY', 'SIZE', 'COMPONENTS'],
            sets.map((e) => [
              e.setId,
              e.time.replace('T', ' ').slice(0, 19),
              e.meta.requestedType,
              e.meta.status,
              e.meta.consistency,
              bytes(e.meta.report.stats.bytesRead),
              e.meta.components.map((c) => `${c.component}:${c.actualType}`).join(' ') || '-',
            ]),
          ),
        );
      } finally {
        await repository.close();
      }
    });

  program
    .command('show')
    .description('show one backup set: its report, components, chain and type decisions')
    .argument('<set>', 'set id (or a unique prefix, or "latest")')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--json', 'print JSON')
    .action(async (ref: string, opts: RepositoryFlags & { config?: string; json?: boolean }) => {
      const config = await resolveConfig(opts.config);
      const repository = await useRepository(opts, config);
      try {
        const catalog = await Catalog.load(repository, catalogCache(config, repository));
        const entry = catalog.find(ref);
        if (!entry) throw new QuiesceError('bad-usage', `no backup set ${ref} (\`quiesce backups\` lists them)`);
        if (opts.json) {
          stdio.json({ id: entry.setId, manifest: entry.manifestId, time: entry.time, tree: entry.tree, ...entry.meta });
          return;
        }
        stdio.out(formatReport(entry.meta.report));
        stdio.out(`  manifest ${entry.manifestId}, host ${entry.meta.hostname}${entry.meta.tags.length ? `, tags ${entry.meta.tags.join(',')}` : ''}`);
        for (const c of entry.meta.components) {
          stdio.out(`  chain ${c.component}: ${c.actualType}${c.basedOn ? ` based on ${c.basedOn}` : ''}${c.stamp ? ', stamp recorded' : ''}; files ${c.files.join(', ')}`);
        }
      } finally {
        await repository.close();
      }
    });
}
