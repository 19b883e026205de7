import type { Command } from 'commander';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runSnapshotSet } from '../../coordinator/index.ts';
import type { WriterEndpoint } from '../../model/index.ts';
import { createProviders } from '../../providers/index.ts';
import { createWriterRuntime } from '../../writers/sdk/index.ts';
import { createSqliteWriter } from '../../writers/sqlite/index.ts';
import { checkBank, createBank, startBankLoad, TOTAL } from '../demo/bank.ts';
import { parseConfig, type Config } from '../../config/index.ts';
import { restore, runBackup } from '../../backup/index.ts';
import { Catalog } from '../../catalog/index.ts';
import { FsBackend, initRepository, type Repository } from '../../repository/index.ts';
import { providerResolver } from '../compose.ts';
import { formatBytes, formatReport, formatWriters, stdio } from '../output.ts';
import { startAgent } from '../../agent/index.ts';
import { createGuestWriter } from '../../writers/guest/index.ts';
import { messageOf } from '../../util/index.ts';

/**
 * `quiesce demo`: the whole story on embedded defaults, with no root, no server and no config.
 * A SQLite application moves money between accounts from four processes; quiesce takes snapshot
 * sets while it runs and proves each one consistent (integrity_check, and the sum never changes),
 * then backs it up (full, incremental, differential) into an encrypted repository, restores the
 * database from the last set, checks it, and re-reads every byte of the repository.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the whole story on embedded defaults (no root, no server, no config)')
    .option('--sets <n>', 'how many snapshot sets to take', '2')
    .option('--keep-files', 'leave the demo directory in place')
    .action(async (opts: { sets: string; keepFiles?: boolean }) => {
      const dir = await mkdtemp(join(tmpdir(), 'quiesce-demo-'));
      try {
        await runDemo(dir, Math.max(1, Number(opts.sets) || 3));
      } finally {
        if (!opts.keepFiles) await rm(dir, { recursive: true, force: true });
      }
    });
}

type Say = (text: string) => void;

/** What every step of the demo works on. */
interface DemoStage {
  dir: string;
  say: Say;
  dbPath: string;
  config: Config;
  endpoint: WriterEndpoint;
  resolveProvider: ReturnType<typeof providerResolver>;
}

async function runDemo(dir: string, sets: number): Promise<void> {
  const say: Say = (text) => stdio.out(text);
  const dbPath = join(dir, 'app', 'bank.db');
  const files = join(dir, 'app', 'uploads');
  await mkdir(files, { recursive: true });
  await writeFile(
    join(files, 'readme.txt'),
    'files taken with no writer: inconsistent, unless an atomic snapshot (btrfs) takes them\n',
  );
  createBank(dbPath);
  const config = parseConfig(
    [
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'writers')}`,
      `paths: [${files}]`,
      'writers:',
      `  - { type: sqlite, name: bank, path: ${dbPath} }`,
    ].join('\n'),
    '(demo config)',
  );
  say(`demo directory ${dir}`);
  say(`1. a SQLite application: 4 processes move money between 100 accounts of ${dbPath} (the sum is always ${TOTAL})`);
  const load = await startBankLoad(dbPath, 4);
  const endpoint = createWriterRuntime(
    createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(dir, 'state', 'writers') }),
  );
  try {
    say('\n2. quiesce writers');
    say(indent(formatWriters([await endpoint.status()])));
    const resolveProvider = providerResolver(config, createProviders());
    const chosen = await resolveProvider(dbPath);
    say(`\n3. provider for ${dbPath}: ${chosen.provider.name} (run \`quiesce providers PATH\` to see why)`);
    const stage: DemoStage = { dir, say, dbPath, config, endpoint, resolveProvider };
    for (let i = 1; i <= sets; i++) {
      say(`\n4.${i} quiesce snapshot (the application keeps running; ${load.progress()} transfers so far)`);
      await demoSnapshot(stage);
    }
    await demoRepository(stage);
  } finally {
    const stats = await load.stop();
    await endpoint.close();
    const transfers = stats.reduce((n, s) => n + s.transfers, 0);
    const errors = stats.reduce((n, s) => n + s.errors, 0);
    say(`\n10. the application made ${transfers} transfers and saw ${errors} errors while quiesce worked`);
    const final = await checkBank(dbPath);
    say(`   the live database: integrity_check ${final.integrity}, sum ${final.sum}`);
    if (errors > 0) process.exitCode = 1;
  }
}

/** One snapshot set, whose snapshot of the database is checked while the application runs. */
async function demoSnapshot({ say, dbPath, config, endpoint, resolveProvider }: DemoStage): Promise<void> {
  const report = await runSnapshotSet({
    kind: 'snapshot',
    backupType: 'copy',
    writers: [{ name: 'bank', endpoint, policy: 'prefer' }],
    paths: config.paths,
    stateDir: config.stateDir,
    stagingDir: config.stagingDir,
    resolveProvider,
    freezeTimeoutMs: config.policy.freezeTimeout,
    commitTimeoutMs: config.policy.commitTimeout,
    plainPaths: config.policy.plainPaths === 'in-freeze' ? 'freeze' : 'live',
    use: async (view) => {
      const check = await checkBank(view.resolve(dbPath)!);
      say(
        `   the snapshot of bank.db: integrity_check ${check.integrity}, sum ${check.sum} (${check.sum === TOTAL ? 'consistent' : 'INCONSISTENT'})`,
      );
      if (check.integrity !== 'ok' || check.sum !== TOTAL) process.exitCode = 1;
    },
  });
  say(indent(formatReport(report)));
}

/**
 * The backup story: a repository, full, incremental and differential backups while the
 * application writes, a restore of the database, a check of every byte, then the guests.
 */
async function demoRepository(stage: DemoStage): Promise<void> {
  const { dir, say, dbPath, config } = stage;
  const repository = await initRepository(await FsBackend.create(join(dir, 'repository')), 'demo password');
  try {
    say(
      `\n5. quiesce init: repository ${repository.id.slice(0, 12)} at ${join(dir, 'repository')} (encrypted, deduplicated)`,
    );
    const last = await demoBackups(stage, repository);
    const catalog = await Catalog.load(repository, null);
    say('\n6. quiesce backups');
    for (const e of catalog.all())
      say(
        `   ${e.setId}  ${e.meta.requestedType.padEnd(12)} ${e.meta.components.map((c) => `${c.component}:${c.actualType}${c.basedOn ? ` on ${c.basedOn}` : ''}`).join(' ')}`,
      );
    const entry = catalog.find(last)!;
    const target = join(dir, 'restored');
    const restored = await restore({ repository, tree: entry.tree, target, include: [dbPath] });
    const check = await checkBank(join(target, dbPath));
    say(`\n7. quiesce restore ${last} --component bank/bank.db --target ${target}`);
    say(
      `   ${restored.files} files, ${formatBytes(restored.bytesWritten)}; the restored bank.db: integrity_check ${check.integrity}, sum ${check.sum} (${check.sum === TOTAL ? 'consistent' : 'INCONSISTENT'})`,
    );
    if (check.integrity !== 'ok' || check.sum !== TOTAL) process.exitCode = 1;
    const verified = await repository.check({ readData: true });
    say(
      `\n8. quiesce check --read-data: ${verified.manifests} sets, ${verified.blobs} blobs in ${verified.packs} packs, ${formatBytes(verified.bytesRead)} re-read: ${verified.ok ? 'no errors were found' : 'DAMAGED'}`,
    );
    if (!verified.ok) process.exitCode = 1;
    await demoGuests({
      dir,
      say,
      repository,
      resolveProvider: stage.resolveProvider,
      stateDir: config.stateDir,
      stagingDir: config.stagingDir,
    });
  } finally {
    await repository.close();
  }
}

/** A full, an incremental and a differential backup; the id of the last set. */
async function demoBackups(stage: DemoStage, repository: Repository): Promise<string> {
  const { dir, say, config, endpoint, resolveProvider } = stage;
  let last = '';
  for (const [step, type] of [
    ['5.1', 'full'],
    ['5.2', 'incremental'],
    ['5.3', 'differential'],
  ] as const) {
    say(`\n${step} quiesce backup --type ${type}`);
    const { report } = await runBackup({
      repository,
      catalogCache: join(dir, 'state', 'catalog.sqlite'),
      backupType: type,
      writers: [{ name: 'bank', endpoint, policy: 'prefer' }],
      paths: config.paths,
      stateDir: config.stateDir,
      stagingDir: config.stagingDir,
      resolveProvider,
    });
    say(indent(formatReport(report)));
    say(
      `     stored: ${report.stats.files} files, ${formatBytes(report.stats.bytesRead)} read, ${formatBytes(report.stats.bytesAdded)} added`,
    );
    last = report.id;
  }
  return last;
}

/**
 * A recursive set on loopback: a guest's agent (mutual TLS, pinned certificates) with its own
 * SQLite writer, and a guest with no agent; one host backup takes both disk images, the first
 * application-consistent, the second crash-consistent, and the report nests each guest's own.
 */
async function demoGuests(options: {
  dir: string;
  say: Say;
  repository: Repository;
  resolveProvider: ReturnType<typeof providerResolver>;
  stateDir: string;
  stagingDir: string;
}): Promise<void> {
  const { dir, say } = options;
  const { connectAgent, loadIdentity, makeIdentity, readPem } = await import('../../rpc/index.ts');
  const guestDir = join(dir, 'guest-vm1');
  let host;
  let guest;
  try {
    host = await makeIdentity(join(dir, 'host-tls'), 'host', 'demo-host');
    guest = await makeIdentity(join(guestDir, 'tls'), 'agent', 'vm1');
  } catch (error) {
    say(`\n9. a recursive set: skipped (${messageOf(error)})`);
    return;
  }
  const guestDb = join(guestDir, 'shop.db');
  createBank(guestDb);
  const images = join(dir, 'images');
  await mkdir(images, { recursive: true });
  const disks = { vm1: join(images, 'vm1.img'), vm2: join(images, 'vm2.img') };
  await writeFile(disks.vm1, Buffer.alloc(1024 * 1024, 1));
  await writeFile(disks.vm2, Buffer.alloc(1024 * 1024, 2));
  const agent = await startAgent({
    name: 'vm1',
    listen: '127.0.0.1:0',
    hosts: [host.cert],
    tls: guest,
    writers: [
      {
        name: 'shop',
        policy: 'prefer',
        endpoint: createWriterRuntime(
          createSqliteWriter({
            name: 'shop',
            path: guestDb,
            stateDir: join(guestDir, 'state', 'writers'),
            honorFull: false,
          }),
        ),
      },
    ],
    paths: [],
    stateDir: join(guestDir, 'state'),
    stagingDir: join(guestDir, 'staging'),
    freezeTimeoutMs: 30_000,
    // No root here: the guest's writers quiesce it; a real guest also freezes its file systems.
    freezeFilesystems: false,
    freezeRoot: false,
  });
  say(
    `\n9. a recursive set: guest vm1 runs \`quiesce agent\` on ${agent.address} (mutual TLS, pinned certificates) with its own SQLite writer (honorFull: false); guest vm2 has no agent`,
  );
  const connection = connectAgent(agent.address, {
    identity: await loadIdentity(host),
    pinned: await readPem(guest.cert, 'certificate'),
    callTimeoutMs: 30_000,
    keepaliveTimeMs: 2000,
  });
  const writers = [
    {
      name: 'vm1',
      policy: 'prefer' as const,
      endpoint: createGuestWriter({ name: 'vm1', disks: [disks.vm1], agent: connection, honorFull: true }),
    },
    {
      name: 'vm2',
      policy: 'off' as const,
      endpoint: createGuestWriter({ name: 'vm2', disks: [disks.vm2], agent: null, honorFull: true }),
    },
  ];
  try {
    say('   quiesce backup --type full (on the host)');
    const { report } = await runBackup({
      repository: options.repository,
      catalogCache: join(dir, 'state', 'catalog.sqlite'),
      backupType: 'full',
      writers,
      paths: [],
      stateDir: options.stateDir,
      stagingDir: options.stagingDir,
      resolveProvider: options.resolveProvider,
    });
    say(indent(formatReport(report)));
    if (report.guests.find((g) => g.name === 'vm1')?.consistency !== 'application') process.exitCode = 1;
  } finally {
    await Promise.all(writers.map((w) => w.endpoint.close()));
    await agent.close();
  }
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `   ${line}`)
    .join('\n');
}
