// Recursive sets over the real agent wire (gRPC, mutual TLS with pinned certificates, on
// loopback), with the guests' agents in this process: the host's set steps each guest's own set,
// guest reports come back nested, one failing guest degrades only itself under prefer and fails
// the set under require (with every guest thawed and aborted), and strangers are refused.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runSnapshotSet, type SetWriter } from '../src/coordinator/index.ts';
import { startAgent, type RunningAgent } from '../src/agent/index.ts';
import { QuiesceError, type BackupType, type QuiescePolicy } from '../src/model/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { createBank } from '../src/cli/demo/bank.ts';
import { createProviders } from '../src/providers/index.ts';
import {
  MAX_MESSAGE_BYTES,
  connectAgent,
  loadAgentService,
  loadIdentity,
  makeIdentity,
  readPem,
  type IdentityFiles,
  type RemoteAgentEndpoint,
  type TlsIdentity,
} from '../src/rpc/index.ts';
import { createGuestWriter } from '../src/writers/guest/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { scriptedWriter, type ScriptedWriterOptions } from './helpers/scripted-writer.ts';

const copy = createProviders().find((p) => p.name === 'copy')!;
let root: string;
let hostFiles: IdentityFiles;
let host: TlsIdentity;
let strangerFiles: IdentityFiles;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-agent-'));
  hostFiles = await makeIdentity(join(root, 'host'), 'host', 'backup-host');
  host = await loadIdentity(hostFiles);
  strangerFiles = await makeIdentity(join(root, 'stranger'), 'stranger', 'stranger');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface TestGuest {
  name: string;
  agent: RunningAgent;
  files: IdentityFiles;
  disk: string;
  log: string[];
  writers: ReturnType<typeof scriptedWriter>[];
}

async function startGuest(
  name: string,
  inner: Omit<ScriptedWriterOptions, 'log'>[],
  freezeTimeoutMs = 5_000,
  more: (dir: string) => SetWriter[] = () => [],
): Promise<TestGuest> {
  const dir = join(root, name);
  const files = await makeIdentity(join(dir, 'tls'), 'agent', name);
  const disk = join(dir, `${name}.img`);
  await writeFile(disk, `disk of ${name}`);
  const log: string[] = [];
  const definitions = inner.map((spec) => scriptedWriter({ ...spec, log, files: spec.files ?? [join(dir, 'data')] }));
  const writers: SetWriter[] = [
    ...definitions.map((definition, i): SetWriter => ({
      name: inner[i]!.name,
      policy: 'prefer',
      endpoint: createWriterRuntime(definition),
    })),
    ...more(dir),
  ];
  const agent = await startAgent({
    name,
    listen: '127.0.0.1:0',
    hosts: [hostFiles.cert],
    tls: files,
    writers,
    paths: [],
    stateDir: join(dir, 'state'),
    stagingDir: join(dir, 'staging'),
    freezeTimeoutMs,
    freezeFilesystems: false,
    freezeRoot: false,
  });
  return { name, agent, files, disk, log, writers: definitions };
}

async function connect(guest: TestGuest, identity: TlsIdentity = host, pinned?: Buffer): Promise<RemoteAgentEndpoint> {
  return connectAgent(guest.agent.address, {
    identity,
    pinned: pinned ?? (await readPem(guest.files.cert, 'cert')),
    callTimeoutMs: 10_000,
    keepaliveTimeMs: 2000,
  });
}

async function hostSet(
  guests: TestGuest[],
  policy: QuiescePolicy,
  options: { backupType?: BackupType; honorFull?: boolean; hostWriters?: SetWriter[] } = {},
) {
  const writers: SetWriter[] = [
    ...(await Promise.all(
      guests.map(async (g) => ({
        name: g.name,
        policy,
        endpoint: createGuestWriter({
          name: g.name,
          disks: [g.disk],
          agent: await connect(g),
          honorFull: options.honorFull ?? true,
        }),
      })),
    )),
    ...(options.hostWriters ?? []),
  ];
  try {
    return await runSnapshotSet({
      kind: 'backup',
      backupType: options.backupType ?? 'full',
      writers,
      paths: [],
      stateDir: join(root, 'host-state'),
      stagingDir: join(root, 'host-staging'),
      resolveProvider: async () => ({ provider: copy, level: 'crash' }),
      freezeTimeoutMs: 10_000,
      callTimeoutMs: 10_000,
    });
  } finally {
    await Promise.all(writers.map((w) => w.endpoint.close()));
  }
}

describe('recursive sets over the agent wire', () => {
  test(
    'one host set quiesces every guest; each guest report comes back nested, on the host clock',
    oneHostSetQuiescesEveryGuest,
  );

  test(
    'one bad guest: under prefer it alone falls to crash and says why; under require the set fails and every guest is thawed and aborted',
    oneBadGuest,
  );

  test(
    "the host's type reaches the guest's writers, subject to their honorFull; a guest with honorFull: false on the host gets copy",
    hostTypeReachesGuestWriters,
  );

  test('a guest with no agent is taken crash-consistent, and the report says so', guestWithoutAgent);

  test(
    'strangers are refused; malformed, oversized and out-of-order messages get errors and the agent keeps serving',
    strangersAndBadMessages,
  );
});

async function oneHostSetQuiescesEveryGuest(): Promise<void> {
  const guests = await Promise.all([
    startGuest('vm1', [{ name: 'db' }, { name: 'web', usage: 'front-end' }]),
    startGuest('vm2', [{ name: 'db' }]),
  ]);
  try {
    const report = await hostSet(guests, 'prefer');
    assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
    assert.equal(report.consistency, 'application');
    assert.deepEqual(
      report.guests.map((g) => [g.name, g.agent, g.consistency, g.status]),
      [
        ['vm1', 'quiesce', 'application', 'succeeded'],
        ['vm2', 'quiesce', 'application', 'succeeded'],
      ],
    );
    const vm1 = report.guests[0]!;
    assert.deepEqual(vm1.writers.map((w) => w.name).sort(), ['db', 'web']);
    assert.ok(vm1.writers.every((w) => w.consistency === 'application' && w.freezeWindowMs !== null));
    assert.ok(
      vm1.frozenAtMs !== null && vm1.frozenAtMs >= 0 && vm1.frozenAtMs < 10_000,
      `frozen at +${vm1.frozenAtMs} ms of the host set`,
    );
    // Inside the guest: front-end froze first, back-end thawed first... in reverse; and backup-complete after thaw.
    const vm1Log = guests[0].log;
    assert.ok(vm1Log.indexOf('web:freeze') < vm1Log.indexOf('db:freeze'));
    assert.ok(vm1Log.indexOf('db:thaw') < vm1Log.indexOf('web:thaw'));
    assert.ok(vm1Log.indexOf('db:thaw') < vm1Log.indexOf('db:backup-complete'));
    assert.ok(
      guests.every((g) => g.writers.every((w) => !w.frozen())),
      'nothing is left frozen',
    );
  } finally {
    await Promise.all(guests.map((g) => g.agent.close()));
  }
}

async function oneBadGuest(): Promise<void> {
  const good = await startGuest('good', [{ name: 'db' }]);
  const bad = await startGuest('bad', [
    { name: 'db' },
    { name: 'ledger', failAt: { phase: 'prepare-snapshot', code: 'nonretryable' } },
  ]);
  try {
    const partial = await hostSet([good, bad], 'prefer');
    assert.equal(partial.status, 'partial');
    const byName = new Map(partial.guests.map((g) => [g.name, g]));
    assert.equal(byName.get('good')!.consistency, 'application');
    assert.equal(byName.get('bad')!.consistency, 'crash');
    const failure = byName.get('bad')!.error!;
    assert.equal(failure.code, 'nonretryable');
    assert.equal(failure.phase, 'prepare-snapshot');
    assert.match(failure.message, /ledger/);
    const inner = byName.get('bad')!.writers.find((w) => w.name === 'ledger')!;
    assert.equal(inner.error?.code, 'nonretryable');
    assert.equal(partial.writers.find((w) => w.name === 'bad')!.error?.code, 'nonretryable');
    assert.ok(bad.log.includes('db:abort'), "the bad guest's other writer was aborted");

    good.log.length = 0;
    bad.log.length = 0;
    const hostLog: string[] = [];
    const hostWriter = scriptedWriter({ name: 'hostdb', log: hostLog, files: [good.disk] });
    const failed = await hostSet([good, bad], 'require', {
      hostWriters: [{ name: 'hostdb', policy: 'prefer', endpoint: createWriterRuntime(hostWriter) }],
    });
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.code, 'nonretryable');
    assert.ok(good.log.includes('db:abort'), `the good guest was aborted too: ${good.log.join(' ')}`);
    assert.ok(
      hostLog.includes('hostdb:abort') && !hostWriter.frozen(),
      `the host's own writer was aborted and is not frozen: ${hostLog.join(' ')}`,
    );
    for (const g of [good, bad])
      assert.ok(
        g.writers.every((w) => !w.frozen()),
        `${g.name} left nothing frozen`,
      );
  } finally {
    await Promise.all([good, bad].map((g) => g.agent.close()));
  }
}

async function hostTypeReachesGuestWriters(): Promise<void> {
  const guest = await startGuest('typed', [], 5_000, (dir) => {
    createBank(join(dir, 'shop.db'));
    createBank(join(dir, 'ledger.db'));
    return [
      {
        name: 'shop',
        policy: 'prefer',
        endpoint: createWriterRuntime(
          createSqliteWriter({
            name: 'shop',
            path: join(dir, 'shop.db'),
            stateDir: join(dir, 'writer-state'),
            honorFull: false,
          }),
        ),
      },
      {
        name: 'ledger',
        policy: 'prefer',
        endpoint: createWriterRuntime(
          createSqliteWriter({ name: 'ledger', path: join(dir, 'ledger.db'), stateDir: join(dir, 'writer-state') }),
        ),
      },
    ];
  });
  try {
    const full = await hostSet([guest], 'require');
    assert.equal(full.status, 'succeeded', JSON.stringify(full.error));
    const inner = new Map(full.guests[0]!.components.map((c) => [c.writer, c]));
    assert.deepEqual(
      [inner.get('shop')!.requestedType, inner.get('shop')!.actualType, inner.get('shop')!.typeReason],
      ['full', 'copy', 'policy'],
      'the guest administrator keeps their chain',
    );
    assert.deepEqual([inner.get('ledger')!.actualType, inner.get('ledger')!.typeReason], ['full', null]);

    const copied = await hostSet([guest], 'require', { honorFull: false });
    assert.equal(copied.components[0]!.actualType, 'copy');
    assert.equal(copied.components[0]!.typeReason, 'policy');
    assert.ok(
      copied.guests[0]!.components.every((c) => c.requestedType === 'copy' && c.actualType === 'copy'),
      'the whole guest took a copy',
    );
  } finally {
    await guest.agent.close();
  }
}

async function guestWithoutAgent(): Promise<void> {
  const disk = join(root, 'bare.img');
  await writeFile(disk, 'a guest without an agent');
  const report = await runSnapshotSet({
    kind: 'backup',
    backupType: 'full',
    writers: [
      {
        name: 'bare',
        policy: 'off',
        endpoint: createGuestWriter({ name: 'bare', disks: [disk], agent: null, honorFull: true }),
      },
    ],
    paths: [],
    stateDir: join(root, 'host-state'),
    stagingDir: join(root, 'host-staging'),
    resolveProvider: async () => ({ provider: copy, level: 'crash' }),
  });
  assert.equal(report.status, 'succeeded');
  assert.equal(report.consistency, 'crash');
  const [node] = report.guests;
  assert.equal(node?.agent, 'none');
  assert.equal(node?.consistency, 'crash');
  assert.match(
    node?.message ?? '',
    /no agent in this guest: its disks were taken with no quiesce, at best crash-consistent/,
  );
  assert.deepEqual(
    report.snapshots.map((s) => s.original),
    [disk],
    'its disk is in the set all the same',
  );
}

async function strangersAndBadMessages(): Promise<void> {
  const guest = await startGuest('vm9', [{ name: 'db' }]);
  try {
    const trusted = await connect(guest);
    assert.equal((await trusted.identify()).name, 'vm9');

    // A host whose certificate the agent does not pin: the handshake fails, no rpc runs.
    const stranger = await connect(guest, await loadIdentity(strangerFiles));
    await assert.rejects(stranger.identify(), (e: unknown) => e instanceof QuiesceError && e.code === 'not-responding');
    await stranger.close();
    // An agent that is not the pinned one: the host refuses it.
    const wrongPin = await connect(guest, host, await readPem(strangerFiles.cert, 'cert'));
    await assert.rejects(wrongPin.identify(), (e: unknown) => e instanceof QuiesceError);
    await wrongPin.close();

    // Out of order: thaw, freeze or prepare-snapshot of a set never prepared.
    for (const call of [
      () => trusted.thaw({ setId: 'nope' }),
      () => trusted.freeze({ setId: 'nope', thawDeadlineMs: 1000 }),
      () => trusted.prepareSnapshot({ setId: 'nope' }),
    ]) {
      await assert.rejects(
        call(),
        (e: unknown) => e instanceof QuiesceError && e.code === 'nonretryable' && /out of order/.test(e.message),
      );
    }
    await assert.rejects(trusted.report({ setId: 'nope' }), /knows no set nope/);

    // Malformed and oversized, from an authenticated peer speaking raw bytes.
    const service = loadAgentService();
    const raw = new grpc.Client(
      guest.agent.address,
      grpc.credentials.createSsl(await readPem(guest.files.cert, 'cert'), host.key, host.cert, {
        checkServerIdentity: () => undefined,
      }),
      {
        'grpc.ssl_target_name_override': 'quiesce-agent',
        'grpc.max_send_message_length': -1,
      },
    );
    const send = (path: string, bytes: Buffer) =>
      new Promise<grpc.ServiceError | null>((resolve) => {
        raw.makeUnaryRequest(
          path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          bytes,
          new grpc.Metadata(),
          {},
          (error) => resolve(error),
        );
      });
    const garbage = await send(service.Freeze.path, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert.equal(garbage?.code, grpc.status.INVALID_ARGUMENT);
    const oversized = await send(service.PrepareBackup.path, Buffer.alloc(MAX_MESSAGE_BYTES + 1024));
    assert.equal(oversized?.code, grpc.status.RESOURCE_EXHAUSTED);
    raw.close();

    // And it still serves its host a whole set.
    const report = await hostSet([guest], 'require');
    assert.equal(report.status, 'succeeded');
    await trusted.close();
  } finally {
    await guest.agent.close();
  }
}
