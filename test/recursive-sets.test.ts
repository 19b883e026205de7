// Recursive sets end to end, on test hosts that stand in for VMs: each guest is a process tree
// in its own network namespace (veth, its own address) and mount namespace, its disk an ext4
// image file on the host's XFS volume, loop-mounted inside the guest only, a SQLite bank under
// write load on it, and `quiesce agent` serving it over mutual TLS. The host runs the real CLI.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { TOTAL } from '../src/cli/demo/bank.ts';
import { runSnapshotSet } from '../src/coordinator/index.ts';
import { SetReportSchema, type Provider, type SetReport } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import {
  connectAgent,
  loadIdentity,
  makeIdentity,
  readPem,
  type IdentityFiles,
  type TlsIdentity,
} from '../src/rpc/index.ts';
import { createGuestWriter } from '../src/writers/guest/index.ts';
import { checkImageBank, makeGuestHost, type GuestHost, type TestGuest } from './helpers/guests/index.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const scriptedAgent = fileURLToPath(new URL('./fixtures/scripted-agent.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const PASSWORD = 'recursive sets need a password too';
/** The guests' own freeze deadline. */
const GUEST_FREEZE_MS = 8_000;

let dir: string;
let host: GuestHost | null = null;
let skip: string | false = false;
let hostFiles: IdentityFiles;
let hostIdentity: TlsIdentity;

interface Guest {
  guest: TestGuest;
  files: IdentityFiles;
  port: number;
}

function quiesce(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, QUIESCE_PASSWORD: PASSWORD } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A guest whose agent serves its bank writer, or (bad) a scripted writer that refuses prepare-snapshot. */
/** `filesOnly`: no writer, only a directory the guest's file-system freeze holds still (level `filesystem`). */
async function startGuest(
  name: string,
  options: { bad?: boolean; workers?: number; filesOnly?: boolean } = {},
): Promise<Guest> {
  const gdir = join(dir, name);
  await mkdir(gdir, { recursive: true });
  const files = await makeIdentity(join(gdir, 'tls'), 'agent', name);
  const template = join(gdir, 'agent.yaml.in');
  const config = join(gdir, 'agent.yaml');
  const port = 7443;
  // The guest's mount point and address exist once the guest does: its command fills them in
  // (GUEST_MOUNT, GUEST_ADDRESS) before it starts the agent. The agent's state stays off the
  // frozen disk: its event log is written during the freeze.
  await writeFile(
    template,
    stringify({
      stateDir: join(gdir, 'state'),
      stagingDir: join(gdir, 'staging'),
      registrationDir: join(gdir, 'writers'),
      policy: { freezeTimeout: `${GUEST_FREEZE_MS}ms` },
      tls: { key: files.key, cert: files.cert },
      agent: { name, listen: `@ADDRESS@:${port}`, hosts: [hostFiles.cert] },
      writers: options.filesOnly ? [] : [{ type: 'sqlite', name: 'bank', path: '@MOUNT@/bank.db' }],
      paths: options.filesOnly ? ['@MOUNT@/notes'] : [],
    }),
  );
  const agent = options.bad
    ? `cd "${repoRoot}" && exec "${process.execPath}" --import tsx "${scriptedAgent}" "${config}" ledger prepare-snapshot nonretryable`
    : `exec "${process.execPath}" "${bin}" agent --config "${config}"`;
  const command = [
    '/bin/sh',
    '-c',
    `sed -e "s|@MOUNT@|$GUEST_MOUNT|g" -e "s|@ADDRESS@|$GUEST_ADDRESS|g" "${template}" > "${config}" && ${agent}`,
  ];
  const guestPromise = host!.startGuest({
    name,
    // One writing process per guest: four guests' workers already keep both cores of a test machine busy.
    imageMiB: 256,
    bankWorkers: options.filesOnly ? 0 : (options.workers ?? 1),
    files: { 'notes/readme.txt': `the notes of ${name}\n` },
    command,
    commandReady: /listening on/,
  });
  const guest = await guestPromise;
  return { guest, files, port };
}

function hostConfig(name: string, guests: Guest[], extra: Record<string, unknown> = {}): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  return writeFile(
    file,
    stringify({
      repository: join(dir, `${name}-repo`),
      stateDir: join(dir, `${name}-state`),
      stagingDir: join(dir, `${name}-staging`),
      registrationDir: join(dir, 'none'),
      policy: { freezeTimeout: '20s' },
      tls: { key: hostFiles.key, cert: hostFiles.cert },
      guests: guests.map((g) => ({
        name: g.guest.name,
        agent: `tls://${g.guest.address}:${g.port}`,
        certificate: g.files.cert,
        disks: [g.guest.image],
      })),
      ...extra,
    }),
  ).then(() => file);
}

function parseReport(stdout: string): SetReport {
  return SetReportSchema.parse(JSON.parse(stdout));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-recursive-'));
  const made = await makeGuestHost({ fs: 'xfs', sizeMiB: 8192 });
  if ('skip' in made) {
    skip = made.skip;
    return;
  }
  host = made;
  hostFiles = await makeIdentity(join(dir, 'host-tls'), 'host', 'backup-host');
  hostIdentity = await loadIdentity(hostFiles);
});
after(async () => {
  await host?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('recursive sets on test hosts in network namespaces', () => {
  test(
    'four guests under write load: one host backup is application-consistent, and every restored image holds a consistent bank',
    fourGuestsBackup,
  );

  test(
    'one bad guest: prefer gives partial (exit 3) with that guest crash and explained; require fails the set and leaves every guest thawed',
    oneBadGuest,
  );

  for (const fault of ['agent killed (SIGKILL)', 'network cut (veth down)'] as const) {
    test(`${fault} while the guest is frozen: its disk is writable again by the deadline plus one second; the host reports not-responding`, (t) =>
      faultWhileFrozen(t, fault));
  }
});

async function fourGuestsBackup(t: TestContext): Promise<void> {
  if (skip) return t.skip(skip);
  const t0 = performance.now();
  const guests = await Promise.all(['vm1', 'vm2', 'vm3', 'vm4'].map((n) => startGuest(n)));
  t.diagnostic(`four guests started in ${Math.round(performance.now() - t0)} ms`);
  try {
    const config = await hostConfig('four', guests);
    assert.equal((await quiesce('init', '--config', config)).code, 0);
    const before = await Promise.all(guests.map((g) => g.guest.bankProgress()));
    const backup = await quiesce('backup', '--config', config, '--type', 'full', '--json');
    assert.equal(backup.code, 0, backup.stderr);
    const report = parseReport(backup.stdout);
    t.diagnostic(
      `backup: ${report.stats.durationMs} ms, ${report.stats.bytesRead} bytes read, host freeze window ${report.freezeWindowMs} ms`,
    );
    assert.equal(report.status, 'succeeded');
    assert.equal(report.consistency, 'application');
    assert.deepEqual(
      report.guests.map((g) => [g.name, g.consistency]),
      guests.map((g) => [g.guest.name, 'application']),
    );
    for (const g of report.guests) {
      assert.equal(g.writers.find((w) => w.name === 'bank')?.consistency, 'application');
      assert.ok(g.freezeWindowMs !== null && g.frozenAtMs !== null);
    }
    // The applications ran on, and were never left frozen.
    // (On a loaded machine a guest's writer may take a while to get the CPU: up to 5 s is allowed;
    // a guest left frozen never writes again.)
    const afterwards = await Promise.all(guests.map((g) => g.guest.bankProgress()));
    let later = afterwards;
    for (const deadline = Date.now() + 5000; Date.now() < deadline && later.some((n, i) => n <= afterwards[i]!);) {
      await new Promise((r) => setTimeout(r, 100));
      later = await Promise.all(guests.map((g) => g.guest.bankProgress()));
    }
    guests.forEach((_, i) =>
      assert.ok(
        later[i]! > afterwards[i]! && afterwards[i]! > before[i]!,
        `guest ${i} kept writing (progress ${before[i]}, ${afterwards[i]}, ${later[i]})`,
      ),
    );

    const shown = await quiesce('show', 'latest', '--config', config);
    assert.equal(shown.code, 0, shown.stderr);
    for (const g of guests)
      assert.match(shown.stdout, new RegExp(`guest ${g.guest.name} \\(quiesce agent\\): succeeded, application`));

    const target = join(dir, 'restored-four');
    const t0 = performance.now();
    const restored = await quiesce('restore', 'latest', '--config', config, '--target', target);
    t.diagnostic(`restore: ${Math.round(performance.now() - t0)} ms`);
    assert.equal(restored.code, 0, restored.stderr);
    for (const g of guests) {
      const check = await checkImageBank(join(target, g.guest.image));
      assert.equal(check.integrity, 'ok', `${g.guest.name}'s restored bank passes integrity_check`);
      assert.equal(check.sum, TOTAL, `${g.guest.name}'s restored bank keeps its invariant`);
      assert.equal(check.accounts, 100);
    }
    for (const g of guests) {
      const stats = await g.guest.stopBank();
      assert.ok(
        stats.every((s) => s.errors === 0),
        `${g.guest.name}'s application saw no errors: ${JSON.stringify(stats)}`,
      );
    }
  } finally {
    await Promise.all(guests.map((g) => g.guest.stop()));
  }
}

async function oneBadGuest(t: TestContext): Promise<void> {
  if (skip) return t.skip(skip);
  const guests = await Promise.all([
    startGuest('ok1'),
    startGuest('files', { filesOnly: true }),
    startGuest('bad', { bad: true }),
  ]);
  try {
    const config = await hostConfig('bad', guests);
    assert.equal((await quiesce('init', '--config', config)).code, 0);
    const partial = await quiesce('backup', '--config', config, '--type', 'full', '--json');
    assert.equal(partial.code, 3, partial.stderr);
    const report = parseReport(partial.stdout);
    assert.equal(report.status, 'partial');
    const byName = new Map(report.guests.map((g) => [g.name, g]));
    assert.equal(byName.get('ok1')!.consistency, 'application');
    assert.equal(
      byName.get('files')!.consistency,
      'filesystem',
      'a guest with no writer, its file system frozen, is file-system consistent',
    );
    assert.equal(byName.get('files')!.status, 'succeeded');
    const bad = byName.get('bad')!;
    assert.equal(bad.consistency, 'crash');
    assert.equal(bad.error?.code, 'nonretryable');
    assert.equal(bad.error?.phase, 'prepare-snapshot');
    assert.equal(bad.error?.writer, 'ledger', "the guest's node names its writer");
    const hostView = report.writers.find((w) => w.name === 'bad')!.error!;
    assert.equal(hostView.code, 'nonretryable');
    assert.match(hostView.message, /^guest bad/, "the host's writer line names the guest");
    assert.match(hostView.message, /ledger/, 'and the writer inside it');

    const requireConfig = await hostConfig('bad-require', guests, {
      policy: { freezeTimeout: '20s', quiesce: 'require' },
    });
    assert.equal((await quiesce('init', '--config', requireConfig)).code, 0);
    const failed = await quiesce('backup', '--config', requireConfig, '--type', 'full', '--json');
    assert.equal(failed.code, 1, failed.stderr);
    const failedReport = parseReport(failed.stdout);
    assert.equal(failedReport.status, 'failed');
    assert.equal(failedReport.error?.code, 'nonretryable');
    // Every guest thawed: its disk takes writes, its application goes on.
    for (const g of guests) {
      const probe = await g.guest.exec(
        ['/bin/sh', '-c', `echo ok > "${g.guest.mountPoint}/probe" && sync "${g.guest.mountPoint}/probe"`],
        { timeoutMs: 3_000 },
      );
      assert.equal(probe.code, 0, `${g.guest.name}'s disk is writable: ${probe.stderr}`);
      if (g.guest.bankPath === null) continue;
      const p0 = await g.guest.bankProgress();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok((await g.guest.bankProgress()) > p0, `${g.guest.name}'s application runs`);
    }
  } finally {
    await Promise.all(guests.map((g) => g.guest.stop()));
  }
}

async function faultWhileFrozen(
  t: TestContext,
  fault: 'agent killed (SIGKILL)' | 'network cut (veth down)',
): Promise<void> {
  if (skip) return t.skip(skip);
  const g = await startGuest(fault.startsWith('agent') ? 'killed' : 'cut');
  const copy = createProviders().find((p) => p.name === 'copy')!;
  let faultAt = 0;
  let writableAfterMs = Infinity;
  // The host's commit is where the fault strikes: the guest is frozen then.
  const striking: Provider = {
    ...copy,
    name: copy.name,
    supports: (p, o) => copy.supports(p, o),
    prepare: (r, o) => copy.prepare(r, o),
    release: (s, o) => copy.release(s, o),
    commit: async (request, options) => {
      const frozenProbe = await g.guest.exec(['/bin/sh', '-c', `echo x > "${g.guest.mountPoint}/probe"`], {
        timeoutMs: 500,
      });
      assert.notEqual(frozenProbe.code, 0, 'the guest disk is frozen during the host commit');
      faultAt = performance.now();
      if (fault.startsWith('agent')) await g.guest.killCommand('SIGKILL');
      else await g.guest.linkDown();
      for (;;) {
        const probe = await g.guest.exec(['/bin/sh', '-c', `echo x > "${g.guest.mountPoint}/probe" && sync`], {
          timeoutMs: 1_000,
        });
        if (probe.code === 0) break;
        if (performance.now() - faultAt > GUEST_FREEZE_MS + 5_000) break;
      }
      writableAfterMs = performance.now() - faultAt;
      return copy.commit(request, options);
    },
  };
  const agent = connectAgent(`${g.guest.address}:${g.port}`, {
    identity: hostIdentity,
    pinned: await readPem(g.files.cert, 'cert'),
    callTimeoutMs: 30_000,
    keepaliveTimeMs: 2000,
  });
  try {
    const report = await runSnapshotSet({
      kind: 'backup',
      backupType: 'copy',
      writers: [
        {
          name: g.guest.name,
          policy: 'prefer',
          endpoint: createGuestWriter({ name: g.guest.name, disks: [g.guest.image], agent, honorFull: true }),
        },
      ],
      paths: [],
      stateDir: join(dir, `fault-${g.guest.name}-state`),
      stagingDir: join(dir, `fault-${g.guest.name}-staging`),
      resolveProvider: async () => ({ provider: striking, level: 'crash' }),
      freezeTimeoutMs: 30_000,
      commitTimeoutMs: 30_000,
      callTimeoutMs: 30_000,
    });
    assert.ok(
      writableAfterMs <= GUEST_FREEZE_MS + 1_000,
      `writable ${Math.round(writableAfterMs)} ms after the fault (deadline ${GUEST_FREEZE_MS} ms)`,
    );
    assert.equal(report.status, 'partial');
    const guest = report.guests[0]!;
    assert.equal(guest.consistency, 'crash');
    assert.equal(guest.error?.code, 'not-responding', JSON.stringify(guest.error));
    assert.equal(report.writers[0]!.error?.code, 'not-responding');
  } finally {
    await agent.close();
    if (fault.startsWith('network')) await g.guest.linkUp();
  }
  if (fault.startsWith('network')) {
    // The guest's side of the same story, once the network is back: its set ended, thawed.
    const again = connectAgent(`${g.guest.address}:${g.port}`, {
      identity: hostIdentity,
      pinned: await readPem(g.files.cert, 'cert'),
      callTimeoutMs: 10_000,
    });
    try {
      const status = await again.status();
      assert.equal(status.state, 'stable');
      assert.equal(status.setId, null);
    } finally {
      await again.close();
    }
  }
  await g.guest.stop();
}
