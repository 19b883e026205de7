import type { Command } from 'commander';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { stdio } from '../output.ts';
import { createRepository, repositoryLocation, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce init`: create a repository (the password from QUIESCE_PASSWORD or --password-file). */
export function registerInit(program: Command, interrupt: Interrupt): void {
  program
    .command('init')
    .description('create a repository')
    .option('-r, --repo <location>', 'repository: a directory or s3://bucket/prefix')
    .option('--password-file <file>', 'read the password from a file')
    .option('-c, --config <file>', 'config file')
    .option('--json', 'print JSON')
    .action(async (opts: RepositoryFlags & { config?: string; json?: boolean }) => {
      const config = opts.config || !opts.repo ? await findConfig(opts.config) : null;
      const repository = await createRepository(opts, config, { signal: interrupt.signal });
      try {
        if (opts.json) stdio.json({ id: repository.id, location: repositoryLocation(opts, config) });
        else stdio.out(`created repository ${repository.id} at ${repositoryLocation(opts, config)}`);
      } finally {
        await repository.close();
      }
    });
}
