import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Catalog } from '../../catalog/index.ts';
import { SetEventSchema, type SetEvent } from '../../model/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { componentLabel, formatBytes, formatReport, stdio, table } from '../output.ts';
import { catalogCachePath, openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce backups` lists the sets; `quiesce show SET` shows one: components, types, chains, report, events. */
export function registerBackups(program: Command, interrupt: Interrupt): void {
  program
    .command('backups')
    .description('list the backup sets in the repository')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--json', 'print JSON')
    .action(async (opts: RepositoryFlags & { config?: string; json?: boolean }) => {
      const { signal } = interrupt;
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      try {
        const catalog = await Catalog.load(repository, catalogCachePath(config, repository), { signal });
        const sets = catalog.all();
        if (opts.json) {
          stdio.json({
            sets: sets.map((e) => ({
              id: e.setId,
              manifest: e.manifestId,
              time: e.time,
              type: e.meta.requestedType,
              status: e.meta.status,
              consistency: e.meta.consistency,
              tags: e.meta.tags,
              host: e.meta.hostname,
              stats: e.meta.report.stats,
              components: e.meta.components,
            })),
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
              formatBytes(e.meta.report.stats.bytesRead),
              e.meta.components.map((c) => `${componentLabel(c.writer, c.component)}:${c.actualType}`).join(' ') || '-',
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
    .option('--events', "also print the set's event log, when it was taken on this host")
    .option('--json', 'print JSON')
    .action(async (ref: string, opts: RepositoryFlags & { config?: string; json?: boolean; events?: boolean }) => {
      const { signal } = interrupt;
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      try {
        const catalog = await Catalog.load(repository, catalogCachePath(config, repository), { signal });
        const entry = catalog.find(ref);
        if (!entry) throw new QuiesceError('bad-usage', `no backup set ${ref} (\`quiesce backups\` lists them)`);
        const events = opts.events ? await readEvents(config.stateDir, entry.setId) : null;
        if (opts.json) {
          stdio.json({
            id: entry.setId,
            manifest: entry.manifestId,
            time: entry.time,
            tree: entry.tree,
            ...entry.meta,
            ...(events ? { events } : {}),
          });
          return;
        }
        stdio.out(formatReport(entry.meta.report));
        stdio.out(
          `  manifest ${entry.manifestId}, host ${entry.meta.hostname}${entry.meta.tags.length ? `, tags ${entry.meta.tags.join(',')}` : ''}`,
        );
        for (const c of entry.meta.components) {
          stdio.out(
            `  chain ${componentLabel(c.writer, c.component)}: ${c.actualType}${c.basedOn ? ` based on ${c.basedOn}` : ''}${c.stamp ? ', stamp recorded' : ''}; files ${c.files.join(', ')}`,
          );
        }
        if (opts.events) {
          if (!events)
            stdio.out(
              `  no event log for ${entry.setId} under ${config.stateDir} (it is kept on the host that took the set)`,
            );
          else
            for (const e of events)
              stdio.out(
                `  ${e.t.toFixed(1).padStart(9)} ms  ${e.phase.padEnd(16)} ${(e.writer ?? e.provider ?? '').padEnd(12)} ${e.event}${e.durationMs === null ? '' : ` ${e.durationMs.toFixed(1)} ms`}${e.result ? `  ${e.result}` : ''}${e.error ? `  ${e.error.code}: ${e.error.message}` : ''}`,
              );
        }
      } finally {
        await repository.close();
      }
    });
}

/** A set's event log from this host's state directory, or null when it was taken elsewhere. */
async function readEvents(stateDir: string, setId: string): Promise<SetEvent[] | null> {
  let text: string;
  try {
    text = await readFile(join(stateDir, 'events', `${setId}.jsonl`), 'utf8');
  } catch {
    return null;
  }
  // A crash may leave a torn last line: keep what parses.
  return text.split('\n').flatMap((line) => {
    try {
      const parsed = SetEventSchema.safeParse(JSON.parse(line));
      return parsed.success ? [parsed.data] : [];
    } catch {
      return [];
    }
  });
}
