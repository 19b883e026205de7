import type { Command } from 'commander';
import { EXIT } from '../exit-codes.ts';
import { findConfig } from '../find-config.ts';
import type { Interrupt } from '../interrupt.ts';
import { formatBytes, stdio } from '../output.ts';
import { openRepositoryFromFlags, type RepositoryFlags } from '../repository-access.ts';
import type { RepairIndexReport, RepairPacksReport } from '../../repository/index.ts';

interface RepairFlags extends RepositoryFlags {
  config?: string;
  json?: boolean;
}

/**
 * `quiesce repair index|packs`, as restic's: `index` rebuilds the index from the packs' own
 * headers; `packs` reads every blob, moves the sound blobs of damaged packs to new packs, and
 * drops the rest from the index (the next backup stores them again), naming what used them.
 */
export function registerRepair(program: Command, interrupt: Interrupt): void {
  const repair = program.command('repair').description('repair a damaged repository: its index, or its packs');
  const common = (command: Command) =>
    command
      .option('-c, --config <file>', 'config file')
      .option('-r, --repo <location>', 'repository')
      .option('--password-file <file>', 'read the password from a file')
      .option('--json', 'print JSON');

  common(repair.command('index').description('rebuild the index from the packs (each pack lists its blobs)')).action(
    async (opts: RepairFlags) => {
      const { signal } = interrupt;
      const repository = await openRepositoryFromFlags(opts, await findConfig(opts.config), { signal });
      try {
        const report = await repository.repairIndex({ signal });
        if (opts.json) stdio.json(report);
        else printIndexReport(report);
      } finally {
        await repository.close();
      }
    },
  );

  common(
    repair
      .command('packs')
      .description('read every blob; drop the damaged ones from the index so the next backup stores them again'),
  ).action(async (opts: RepairFlags) => {
    const { signal } = interrupt;
    const repository = await openRepositoryFromFlags(opts, await findConfig(opts.config), { signal });
    try {
      const report = await repository.repairPacks({ signal });
      if (opts.json) stdio.json(report);
      else printPacksReport(report);
      // Data was lost: the repair made the repository sound, but some files are gone from old sets.
      if (report.dropped.length > 0) process.exitCode = EXIT.failed;
    } finally {
      await repository.close();
    }
  });
}

function printIndexReport(report: RepairIndexReport): void {
  for (const bad of report.damagedIndexes) stdio.out(`  damaged index ${bad.name}: ${bad.message}`);
  for (const pack of report.packsFromHeaders) stdio.out(`  pack ${pack}: indexed again from its header`);
  for (const pack of report.packsMissing) stdio.out(`  pack ${pack}: missing, dropped from the index`);
  for (const bad of report.packsUnreadable) stdio.out(`  pack ${bad.pack}: ${bad.message}; left out of the index`);
  stdio.out(
    report.changed
      ? `wrote a new index of ${report.packs} packs, removed ${report.indexesRead} old index objects`
      : `the index of ${report.packs} packs is sound: nothing was changed`,
  );
}

function printPacksReport(report: RepairPacksReport): void {
  stdio.out(`read ${report.packsRead} packs, ${formatBytes(report.bytesRead)}`);
  for (const bad of report.damagedPacks) stdio.out(`  damaged pack ${bad.pack}: ${bad.message}`);
  for (const blob of report.dropped) {
    stdio.out(`  dropped ${blob.type} blob ${blob.id}: ${blob.message}`);
    if (blob.usedBy.length > 0) stdio.out(`    used by: ${blob.usedBy.join(', ')}`);
  }
  if (report.damagedPacks.length === 0) {
    stdio.out('every pack is sound: nothing was changed');
    return;
  }
  stdio.out(
    `copied ${report.blobsSalvaged} sound blobs to ${report.packsWritten} new packs and removed ${report.damagedPacks.length} damaged packs`,
  );
  if (report.dropped.length > 0)
    stdio.out(
      `${report.dropped.length} blobs are lost from the sets above; the next backup stores them again if their files still exist`,
    );
}
