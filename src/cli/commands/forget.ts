import type { Command } from 'commander';
import { Catalog, selectForget, type ForgetPolicy } from '../../catalog/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { formatBytes, stdio } from '../output.ts';
import { catalogCachePath, openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';

interface ForgetFlags extends RepositoryFlags {
  config?: string;
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  keepYearly?: string;
  keepTag: string[];
  prune?: boolean;
  grace?: string;
  dryRun?: boolean;
  json?: boolean;
}

const count = (flag: string, value: string | undefined): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new QuiesceError('bad-usage', `${flag} takes a whole number, not ${value}`);
  return n;
};

/**
 * `quiesce forget --keep-… [--prune]`: drop the sets no keep rule keeps, never one that a kept
 * set's chain (or the next incremental or differential) still needs; with --prune, then delete
 * the data nothing references any more, once it is older than the grace period.
 */
export function registerForget(program: Command, interrupt: Interrupt): void {
  program
    .command('forget')
    .description('forget backup sets by keep rules, and with --prune delete unreferenced data')
    .option('-c, --config <file>', 'config file')
    .option('-r, --repo <location>', 'repository')
    .option('--password-file <file>', 'read the password from a file')
    .option('--keep-last <n>', 'keep the newest n sets')
    .option('--keep-hourly <n>', 'keep the newest set of each of the last n hours')
    .option('--keep-daily <n>', 'keep the newest set of each of the last n days')
    .option('--keep-weekly <n>', 'keep the newest set of each of the last n weeks')
    .option('--keep-monthly <n>', 'keep the newest set of each of the last n months')
    .option('--keep-yearly <n>', 'keep the newest set of each of the last n years')
    .option(
      '--keep-tag <tag>',
      'keep every set with this tag (repeatable)',
      (value: string, all: string[]) => [...all, value],
      [],
    )
    .option('--prune', 'then delete unreferenced data')
    .option('--grace <hours>', 'with --prune: only delete unreferenced data older than this', '24')
    .option('--dry-run', 'say what would be forgotten, change nothing')
    .option('--json', 'print JSON')
    .action(async (opts: ForgetFlags) => {
      const policy: ForgetPolicy = {
        last: count('--keep-last', opts.keepLast),
        hourly: count('--keep-hourly', opts.keepHourly),
        daily: count('--keep-daily', opts.keepDaily),
        weekly: count('--keep-weekly', opts.keepWeekly),
        monthly: count('--keep-monthly', opts.keepMonthly),
        yearly: count('--keep-yearly', opts.keepYearly),
        tags: opts.keepTag,
      };
      const rules = Object.entries(policy).filter(([k, v]) =>
        k === 'tags' ? (v as string[]).length > 0 : v !== undefined,
      );
      if (rules.length === 0)
        throw new QuiesceError('bad-usage', 'forget needs at least one --keep-… rule; it never forgets everything');
      const graceHours = Number(opts.grace ?? '24');
      if (!Number.isFinite(graceHours) || graceHours < 0)
        throw new QuiesceError('bad-usage', `--grace takes a number of hours, not ${opts.grace}`);
      const { signal } = interrupt;
      const config = await findConfig(opts.config);
      const repository = await openRepositoryFromFlags(opts, config, { signal });
      try {
        const lock = await repository.lock('exclusive', { signal });
        let decision;
        try {
          const catalog = await Catalog.load(repository, catalogCachePath(config, repository), { signal });
          decision = selectForget(catalog.all(), policy);
          if (!opts.dryRun)
            for (const entry of decision.remove) await repository.removeManifest(entry.manifestId, { signal });
        } finally {
          await lock.release();
        }
        const pruned =
          opts.prune && !opts.dryRun ? await repository.prune({ graceMs: graceHours * 3_600_000, signal }) : null;
        if (opts.json) {
          stdio.json({
            keep: decision.keep.map((k) => ({ id: k.entry.setId, reasons: k.reasons })),
            remove: decision.remove.map((e) => e.setId),
            dryRun: opts.dryRun ?? false,
            prune: pruned,
          });
          return;
        }
        for (const k of decision.keep) stdio.out(`keep   ${k.entry.setId}  ${k.reasons.join('; ')}`);
        for (const e of decision.remove) stdio.out(`${opts.dryRun ? 'would forget' : 'forget'} ${e.setId}`);
        if (pruned) {
          const temporary =
            pruned.temporaryFilesRemoved > 0
              ? `, ${pruned.temporaryFilesRemoved} temporary files of interrupted writes removed`
              : '';
          stdio.out(
            `pruned: ${pruned.packsRemoved} packs removed, ${pruned.packsRepacked} repacked, ${formatBytes(pruned.bytesFreed)} freed, ${pruned.packsKeptForGrace} kept for the grace period${temporary}`,
          );
        }
      } finally {
        await repository.close();
      }
    });
}
