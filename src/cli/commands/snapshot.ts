import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdir, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  listKeptSets,
  readLastCleanup,
  releaseKeptSet,
  runSnapshotSet,
  type DeadSetCleanup,
  type SnapshotView,
  type UseOutcome,
} from '../../coordinator/index.ts';
import { QuiesceError, type SnapshotPath } from '../../model/index.ts';
import { createProviders } from '../../providers/index.ts';
import { closeWriters, composeWriters, providerResolver } from '../compose.ts';
import { EXIT, exitForStatus } from '../exit-codes.ts';
import type { Interrupt } from '../interrupt.ts';
import { parsePolicyFlag, parseWaitFlag } from '../set-flags.ts';
import { findConfig } from '../find-config.ts';
import { formatBytes, formatReport, stdio } from '../output.ts';

interface SnapshotOptions {
  config?: string;
  keep?: boolean;
  json?: boolean;
  release?: string;
  list?: boolean;
  quiesce?: string;
  wait?: string;
}

/**
 * `quiesce snapshot [-- CMD ...]`: one snapshot set of the config's writers and paths. CMD runs
 * after thaw, against the snapshot, with QUIESCE_SET_ID, QUIESCE_SNAPSHOT_ROOT and one
 * QUIESCE_SNAPSHOT_<PATH> variable per snapshotted path; the set is released after it unless --keep.
 */
export function registerSnapshot(program: Command, interrupt: Interrupt): void {
  program
    .command('snapshot')
    .description('create a snapshot set; run CMD against it; release it (unless --keep)')
    .argument(
      '[cmd...]',
      'command to run with the snapshot (after --); one argument with spaces runs through /bin/sh -c',
    )
    .option('-c, --config <file>', 'config file')
    .option('--keep', 'keep the snapshot after the command (release later with --release)')
    .option('--release <set>', 'release a kept set')
    .option('--list', 'list kept sets')
    .option('--quiesce <policy>', 'override every writer policy: require, prefer or off')
    .option('--wait <seconds>', 'wait for a set in progress on this host instead of failing', '0')
    .option('--json', "print the report as JSON (the command's stdout goes to stderr)")
    .action(async (cmd: string[], opts: SnapshotOptions) => {
      const config = await findConfig(opts.config);
      const providers = createProviders();
      if (opts.list) {
        const sets = await listKeptSets(config.stateDir);
        const lastCleanup = await readLastCleanup(config.stateDir);
        if (opts.json) stdio.json({ sets, lastCleanup });
        else {
          stdio.out(
            sets.length === 0
              ? 'no kept sets'
              : sets
                  .map(
                    (s) =>
                      `${s.setId}  ${s.createdAt}  ${s.snapshots.flatMap((x) => x.paths.map((p) => p.original)).join(', ')}`,
                  )
                  .join('\n'),
          );
          if (lastCleanup) stdio.out(formatCleanup(lastCleanup));
        }
        return;
      }
      if (opts.release) {
        const kept = await releaseKeptSet(config.stateDir, opts.release, new Map(providers.map((p) => [p.name, p])));
        if (opts.json) stdio.json({ released: kept.setId });
        else stdio.out(`released set ${kept.setId}`);
        return;
      }
      const policy = parsePolicyFlag(opts.quiesce);
      const waitForLockMs = parseWaitFlag(opts.wait);

      const writers = await composeWriters(config, policy);
      const { signal } = interrupt;
      try {
        const report = await runSnapshotSet({
          kind: 'snapshot',
          backupType: 'copy',
          writers,
          paths: config.paths,
          stateDir: config.stateDir,
          stagingDir: config.stagingDir,
          resolveProvider: providerResolver(config, providers),
          providers,
          freezeTimeoutMs: config.policy.freezeTimeout,
          commitTimeoutMs: config.policy.commitTimeout,
          // A snapshot outlives the moment it is read (--keep, a command's later reads): copy its plain paths.
          plainPaths: config.policy.plainPaths === 'in-freeze' ? 'freeze' : 'after-thaw',
          keep: opts.keep ?? false,
          waitForLockMs,
          signal,
          use:
            cmd.length > 0
              ? (view, signal) => runCommand(cmd, view, config.stagingDir, opts.json ?? false, signal)
              : undefined,
        });
        if (opts.json) stdio.json(report);
        else stdio.out(formatReport(report));
        process.exitCode = exitForStatus(report.status);
      } finally {
        await closeWriters(writers);
      }
    });
}

/** `QUIESCE_SNAPSHOT_SRV_SHOP_SHOP_DB` for /srv/shop/shop.db. */
export function snapshotVariable(original: string): string {
  return `QUIESCE_SNAPSHOT_${original
    .replace(/^\/+/, '')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .toUpperCase()}`;
}

/**
 * One directory that mirrors the original paths. When every snapshot path is `<R>/<original>` for
 * one R (copy, fsfreeze), R is it; otherwise a directory of symlinks to the snapshots is made
 * (follow them: `tar -h`, `rsync -L`).
 */
async function snapshotRoot(paths: SnapshotPath[], stagingDir: string, setId: string): Promise<string> {
  const roots = new Set(
    paths.map((p) =>
      p.snapshot.endsWith(p.original) ? p.snapshot.slice(0, p.snapshot.length - p.original.length) : null,
    ),
  );
  if (roots.size === 1 && !roots.has(null)) return [...roots][0]!;
  const view = join(stagingDir, `${setId}.view`);
  for (const p of paths) {
    const link = join(view, p.original);
    await mkdir(dirname(link), { recursive: true });
    await symlink(p.snapshot, link);
  }
  return view;
}

async function runCommand(
  cmd: string[],
  view: SnapshotView,
  stagingDir: string,
  json: boolean,
  signal: AbortSignal,
): Promise<UseOutcome> {
  const root = await snapshotRoot(view.snapshots, stagingDir, view.setId);
  const env: NodeJS.ProcessEnv = { ...process.env, QUIESCE_SET_ID: view.setId, QUIESCE_SNAPSHOT_ROOT: root };
  for (const p of view.snapshots) env[snapshotVariable(p.original)] = p.snapshot;
  const [file, ...args] = cmd.length === 1 && /\s/.test(cmd[0]!) ? ['/bin/sh', '-c', cmd[0]!] : cmd;
  try {
    const code = await new Promise<number | string>((resolve, reject) => {
      const child = spawn(file!, args, {
        env,
        stdio: ['inherit', json ? process.stderr : 'inherit', 'inherit'],
        signal,
      });
      child.on('error', reject);
      child.on('exit', (status, sig) => resolve(status ?? sig ?? 1));
    });
    if (code === 0) return {};
    return {
      error: new QuiesceError(
        'nonretryable',
        `the command ${cmd.join(' ')} ended with ${typeof code === 'number' ? `exit status ${code}` : `signal ${code}`}`,
        { phase: 'post-snapshot' },
      ),
    };
  } catch (error) {
    return { error: QuiesceError.from(error, 'nonretryable', { phase: 'post-snapshot' }) };
  } finally {
    if (root.endsWith('.view')) await rm(root, { recursive: true, force: true });
  }
}

export { EXIT };

/** The last cleanup after dead sets, for `--list`: when, by which set, what and how much. */
function formatCleanup(cleanup: DeadSetCleanup): string {
  const lines = [
    `last cleanup of dead sets: ${cleanup.at} by set ${cleanup.bySetId}: ${cleanup.sets.length} set(s), ${formatBytes(cleanup.bytes)} freed`,
  ];
  for (const set of cleanup.sets) {
    lines.push(
      `  ${set.setId} (process ${set.pid}, started ${set.startedAt}): ${formatBytes(set.bytes)}, ${set.processes} process(es) ended`,
    );
    for (const dir of set.removed) lines.push(`    removed ${dir}`);
    for (const failure of set.failures) lines.push(`    left: ${failure}`);
  }
  return lines.join('\n');
}
