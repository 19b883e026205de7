import type { Command } from 'commander';
import { EXIT } from '../exit-codes.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { formatBytes, stdio } from '../output.ts';
import { openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce check [--read-data]`: structure, or structure and every byte. */
export function registerCheck(program: Command, interrupt: Interrupt): void {
  program
    .command('check')
    .description('check the repository: its structure, and with --read-data every chunk')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--read-data', 're-read and re-hash every chunk')
    .option('--json', 'print JSON')
    .action(async (opts: RepositoryFlags & { config?: string; readData?: boolean; json?: boolean }) => {
      const { signal } = interrupt;
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      try {
        const report = await repository.check({ readData: opts.readData ?? false, signal });
        if (opts.json) stdio.json(report);
        else {
          stdio.out(
            `checked ${report.manifests} manifests, ${report.trees} trees, ${report.blobs} blobs in ${report.packs} packs${opts.readData ? `, read ${formatBytes(report.bytesRead)}` : ''}`,
          );
          for (const p of report.problems) {
            stdio.out(
              `  ${p.kind} ${p.object}: ${p.message}${p.files?.length ? `\n    used by: ${p.files.join(', ')}` : ''}`,
            );
          }
          stdio.out(report.ok ? 'no errors were found' : 'the repository is damaged: see above');
        }
        if (!report.ok) process.exitCode = EXIT.failed;
      } finally {
        await repository.close();
      }
    });
}
