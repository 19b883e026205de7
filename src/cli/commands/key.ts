import type { Command } from 'commander';
import { QuiesceError } from '../../model/index.ts';
import { messageOf, readRegularFile } from '../../util/index.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { stdio } from '../output.ts';
import { MAX_PASSWORD_FILE_BYTES, openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

interface KeyFlags extends RepositoryFlags {
  config?: string;
  json?: boolean;
}

/**
 * `quiesce key add|list|remove`: the passwords of a repository, each a key file wrapping the
 * same master key. The key the current password opens is never removed, so one always opens.
 */
export function registerKey(program: Command, interrupt: Interrupt): void {
  const key = program.command('key').description('manage the passwords of a repository');
  const common = (command: Command) =>
    command
      .option('-c, --config <file>', 'config file')
      .option('-r, --repo <location>', 'repository')
      .option('--password-file <file>', 'a current password, from a file (default QUIESCE_PASSWORD)')
      .option('--json', 'print JSON');

  common(key.command('add').description('add a password: a new key file wrapping the same master key'))
    .requiredOption('--new-password-file <file>', 'the new password, from a file')
    .action(async (opts: KeyFlags & { newPasswordFile: string }) => {
      let password: string;
      try {
        password = (await readRegularFile(opts.newPasswordFile, MAX_PASSWORD_FILE_BYTES)).replace(/\r?\n$/, '');
      } catch (error) {
        throw new QuiesceError(
          'bad-usage',
          `cannot read the new password file ${opts.newPasswordFile}: ${messageOf(error)}`,
        );
      }
      if (password.length === 0)
        throw new QuiesceError('bad-usage', `the new password file ${opts.newPasswordFile} is empty`);
      const { signal } = interrupt;
      const repository = await openRepositoryFromFlags(opts, await findConfig(opts.config), { signal });
      try {
        const id = await repository.addPassword(password, { signal });
        if (opts.json) stdio.json({ added: id });
        else stdio.out(`added key ${id.slice(0, 12)} to repository ${repository.id}`);
      } finally {
        await repository.close();
      }
    });

  common(key.command('list').description('list the key files; * marks the one this password opens')).action(
    async (opts: KeyFlags) => {
      const { signal } = interrupt;
      const repository = await openRepositoryFromFlags(opts, await findConfig(opts.config), { signal });
      try {
        const keys = await repository.listKeys({ signal });
        if (opts.json) stdio.json(keys);
        else
          for (const k of keys)
            stdio.out(
              `${k.current ? '*' : ' '} ${k.id.slice(0, 12)}  ${k.created ?? '(not a key file)'}  ${k.hostname ?? ''}`,
            );
      } finally {
        await repository.close();
      }
    },
  );

  common(key.command('remove').description('remove a key file (an id or a unique prefix of 8 or more characters)'))
    .argument('<id>', 'the key to remove (quiesce key list shows them)')
    .action(async (id: string, opts: KeyFlags) => {
      const { signal } = interrupt;
      const repository = await openRepositoryFromFlags(opts, await findConfig(opts.config), { signal });
      try {
        // Exclusive: two removals at once, each with another password, could otherwise remove both keys.
        const lock = await repository.lock('exclusive', { signal });
        try {
          const removed = await repository.removeKey(id, { signal });
          if (opts.json) stdio.json({ removed });
          else stdio.out(`removed key ${removed.slice(0, 12)}`);
        } finally {
          await lock.release();
        }
      } finally {
        await repository.close();
      }
    });
}
