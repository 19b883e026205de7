import type { Command } from 'commander';
import { EXIT } from '../exit-codes.ts';
import { resolveConfig } from '../load-config.ts';
import { stdio } from '../output.ts';
import { bytes } from '../progress.ts';
import { useRepository, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce check [--read-data]`: structure, or structure and every byte. */
export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('check the repository: its structure, and with --read-data every chunk')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--read-data', 're-read and re-hash every chunk')
    .option('--json', 'print JSON')
    .action(async (opts: RepositoryFlags & { config?: string; readData?: boolean; json?: boolean }) => {
      const config = await resolveConfig(opts.config);
      const repository = await useRepository(opts, config);
      try {
        const report = await repository.check({ readData: opts.readData ?? false });
        if (opts.json) stdio.json(report);
        else {
          stdio.out(
            `checked ${report.manifests} manifests, ${report.trees} trees, ${report.blobs} blobs in ${report.packs} packs${opts.readData ? `, read ${bytes(report.bytesRead)}` : ''}`,
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
