import type { Command } from 'commander';
import { readWriterOutcomes } from '../../coordinator/index.ts';
import type { WriterStatus } from '../../model/index.ts';
import { closeWriters, composeWriters } from '../compose.ts';
import { findConfig } from '../find-config.ts';
import { formatWriters, stdio } from '../output.ts';
import { messageOf } from '../../util/index.ts';

/** `quiesce writers`: every writer, its components, its state and last failure (what `vssadmin list writers` shows). */
export function registerWriters(program: Command): void {
  program
    .command('writers')
    .description('list the writers, their components, states and last failures')
    .option('-c, --config <file>', 'config file')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const config = await findConfig(opts.config);
      const writers = await composeWriters(config);
      try {
        const statuses = await Promise.all(
          writers.map(async (w): Promise<WriterStatus | { name: string; error: string }> => {
            try {
              return await w.endpoint.status({ signal: AbortSignal.timeout(5_000) });
            } catch (error) {
              return { name: w.name, error: messageOf(error) };
            }
          }),
        );
        // An in-process writer lives only as long as the set's process: its last outcome comes from the state directory.
        const outcomes = await readWriterOutcomes(config.stateDir);
        for (const status of statuses) {
          if ('error' in status || status.lastFailure || status.state !== 'stable') continue;
          const outcome = outcomes[status.metadata.name];
          if (outcome?.lastFailure) {
            status.state = outcome.state;
            status.lastFailure = outcome.lastFailure;
          }
        }
        if (opts.json) stdio.json({ writers: statuses });
        else stdio.out(statuses.length === 0 ? 'no writers configured or registered' : formatWriters(statuses));
        if (statuses.some((s) => 'error' in s)) process.exitCode = 1;
      } finally {
        await closeWriters(writers);
      }
    });
}
