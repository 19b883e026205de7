import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { QuiesceError } from '../../model/index.ts';
import { resolveConfig } from '../load-config.ts';
import { stdio } from '../output.ts';
import { useRepository, type RepositoryFlags } from '../repository-access.ts';

/** `quiesce key add --new-password-file F`: another password for the same repository (its own key file). */
export function registerKey(program: Command): void {
  const key = program.command('key').description('manage the passwords of a repository');
  key
    .command('add')
    .description('add a password: a new key file wrapping the same master key')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'a current password, from a file (default QUIESCE_PASSWORD)')
    .requiredOption('--new-password-file <file>', 'the new password, from a file')
    .action(async (opts: RepositoryFlags & { config?: string; newPasswordFile: string }) => {
      let password: string;
      try {
        password = (await readFile(opts.newPasswordFile, 'utf8')).replace(/\r?\n$/, '');
      } catch (error) {
        throw new QuiesceError('bad-usage', `cannot read the new password file ${opts.newPasswordFile}: ${(error as Error).message}`);
      }
      if (password.length === 0) throw new QuiesceError('bad-usage', `the new password file ${opts.newPasswordFile} is empty`);
      const config = await resolveConfig(opts.config);
      const repository = await useRepository(opts, config);
      try {
        await repository.addPassword(password);
        stdio.out(`added a password to repository ${repository.id}`);
      } finally {
        await repository.close();
      }
    });
}
