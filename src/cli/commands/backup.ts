import type { Command } from 'commander';
import { prefetchMetadata, runBackup } from '../../backup/index.ts';
import { createProviders } from '../../providers/index.ts';
import { closeWriters, composeWriters, providerResolver } from '../compose.ts';
import { exitForStatus } from '../exit-codes.ts';
import type { Interrupt } from '../interrupt.ts';
import { parsePolicyFlag, parseTypeFlag, parseWaitFlag } from '../set-flags.ts';
import { findConfig } from '../find-config.ts';
import { formatBytes, formatReport, stdio } from '../output.ts';
import { progressLine } from '../progress.ts';
import { catalogCachePath, openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

interface BackupFlags extends RepositoryFlags {
  config?: string;
  type: string;
  quiesce?: string;
  tag: string[];
  json?: boolean;
  wait?: string;
}

/** `quiesce backup`: one snapshot set, read and stored while the applications run again. */
export function registerBackup(program: Command, interrupt: Interrupt): void {
  program
    .command('backup')
    .description('take a snapshot set and store it in the repository')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository (default: QUIESCE_REPO or the config)')
    .option('--password-file <file>', 'read the password from a file')
    .option('-t, --type <type>', 'full, copy, incremental, differential or log', 'full')
    .option('--quiesce <policy>', 'override every writer policy: require, prefer or off')
    .option('--tag <tag>', 'tag the backup set (repeatable)', (value: string, all: string[]) => [...all, value], [])
    .option('--wait <seconds>', 'wait for a set in progress on this host instead of failing', '0')
    .option('--json', 'print the report as JSON')
    .action(async (opts: BackupFlags) => {
      const type = parseTypeFlag(opts.type);
      const policy = parsePolicyFlag(opts.quiesce);
      const waitForLockMs = parseWaitFlag(opts.wait);
      const config = await findConfig(opts.config);
      const { signal } = interrupt;
      // The paths' metadata is read ahead on another thread while the repository opens.
      const prefetch = prefetchMetadata(config.paths);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      const writers = await composeWriters(config, policy);
      const progress = progressLine(!opts.json, 'backup');
      const providers = createProviders();
      try {
        const { report, manifestId } = await runBackup({
          repository,
          catalogCache: catalogCachePath(config, repository),
          backupType: type,
          tags: opts.tag,
          writers,
          paths: config.paths,
          stateDir: config.stateDir,
          stagingDir: config.stagingDir,
          resolveProvider: providerResolver(config, providers),
          providers,
          freezeTimeoutMs: config.policy.freezeTimeout,
          commitTimeoutMs: config.policy.commitTimeout,
          plainPaths: config.policy.plainPaths === 'in-freeze' ? 'freeze' : 'live',
          waitForLockMs,
          signal,
          onProgress: (p) => progress.update(p),
        });
        progress.done();
        if (opts.json) stdio.json({ ...report, manifest: manifestId });
        else {
          stdio.out(formatReport(report));
          stdio.out(
            `  stored: ${report.stats.files} files, ${formatBytes(report.stats.bytesRead)} read, ${formatBytes(report.stats.bytesAdded)} added${manifestId ? `, manifest ${manifestId.slice(0, 12)}` : ''}`,
          );
        }
        process.exitCode = exitForStatus(report.status);
      } finally {
        prefetch.stop();
        progress.done();
        await closeWriters(writers);
        await repository.close();
      }
    });
}
