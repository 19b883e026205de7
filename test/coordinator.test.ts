// The snapshot-set engine against real runtimes and the real copy provider: phase order,
// vetoes at every phase with every code, deadlines, policies, the host lock and the event log.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runSnapshotSet, type SetWriter, type SnapshotSetOptions } from '../src/coordinator/index.ts';
import { FAILURE_CODES, SetEventSchema, type QuiescePolicy, type SetEvent } from '../src/model/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';
import { scriptedWriter, type ScriptedPhase, type ScriptedWriterOptions } from './helpers/scripted-writer.ts';

let root: string;
let data: string;
const copy = createProviders().find((p) => p.name === 'copy')!;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'quiesce-coord-'));
  data = join(root, 'data');
  await mkdir(data);
  await writeFile(join(data, 'a.txt'), 'alpha');
  await writeFile(join(data, 'b.txt'), 'beta');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Harness {
  log: string[];
  writers: (SetWriter & { definition: ReturnType<typeof scriptedWriter> })[];
  options: SnapshotSetOptions;
}

function harness(
  specs: (Omit<ScriptedWriterOptions, 'log'> & { policy?: QuiescePolicy })[],
  extra: Partial<SnapshotSetOptions> = {},
): Harness {
  const log: string[] = [];
  const writers = specs.map((spec) => {
    const definition = scriptedWriter({ ...spec, log, files: spec.files ?? [join(data, 'a.txt')] });
    return { name: spec.name, policy: spec.policy ?? 'prefer', endpoint: createWriterRuntime(definition), definition };
  });
  const stamp = `${Date.now()}-${Math.random()}`;
  const options: SnapshotSetOptions = {
    kind: 'snapshot',
    backupType: 'copy',
    writers,
    paths: [join(data, 'b.txt')],
    stateDir: join(root, 'state', stamp),
    stagingDir: join(root, 'staging'),
    resolveProvider: async () => ({ provider: copy, level: 'crash' }),
    freezeTimeoutMs: 5_000,
    callTimeoutMs: 5_000,
    ...extra,
  };
  return { log, writers, options };
}

async function events(options: SnapshotSetOptions, setId: string): Promise<SetEvent[]> {
  const text = await readFile(join(options.stateDir, 'events', `${setId}.jsonl`), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => SetEventSchema.parse(JSON.parse(line)));
}

describe('snapshot set', () => {
  test('runs every phase, freezes front-end, back-end, system and thaws in reverse; the use sees the snapshot', async () => {
    const h = harness([
      { name: 'db', usage: 'back-end' },
      { name: 'os', usage: 'system' },
      { name: 'web', usage: 'front-end' },
    ]);
    let seen = '';
    const report = await runSnapshotSet({
      ...h.options,
      use: async (view) => {
        seen = await readFile(view.resolve(join(data, 'a.txt'))!, 'utf8');
        await writeFile(join(data, 'a.txt'), 'changed after thaw');
      },
    });
    await writeFile(join(data, 'a.txt'), 'alpha');
    assert.equal(report.status, 'succeeded');
    assert.equal(report.consistency, 'inconsistent', 'the plain path b.txt has no writer: read in place after thaw');
    assert.equal(report.snapshots.find((s) => s.original === join(data, 'b.txt'))?.provider, 'live');
    assert.deepEqual(new Set(report.components.map((c) => c.consistency)), new Set(['application']));
    assert.equal(seen, 'alpha');
    const freezes = h.log.filter((l) => l.endsWith(':freeze'));
    const thaws = h.log.filter((l) => l.endsWith(':thaw'));
    assert.deepEqual(freezes, ['web:freeze', 'db:freeze', 'os:freeze']);
    assert.deepEqual(thaws, ['os:thaw', 'db:thaw', 'web:thaw']);
    assert.ok(report.freezeWindowMs !== null && report.freezeWindowMs >= 0);
    for (const w of report.writers) assert.ok(w.freezeWindowMs !== null, `${w.name} has a freeze window`);
    const log = await events(h.options, report.id);
    const phases = log.filter((e) => e.writer === 'db' && e.event === 'end').map((e) => e.phase);
    assert.deepEqual(phases, [
      'identify',
      'prepare-backup',
      'prepare-snapshot',
      'freeze',
      'thaw',
      'post-snapshot',
      'backup-complete',
      'shutdown',
    ]);
    assert.ok(log.some((e) => e.phase === 'commit' && e.provider === 'copy' && e.event === 'end'));
    for (const w of h.writers) assert.equal(w.definition.frozen(), false);
  });

  const vetoPhases: ScriptedPhase[] = ['prepare-backup', 'prepare-snapshot', 'freeze', 'thaw'];
  for (const phase of vetoPhases) {
    for (const code of FAILURE_CODES) {
      test(`require: a writer failing at ${phase} with ${code} fails the set; the others are thawed and aborted`, async () => {
        const h = harness([
          { name: 'front', usage: 'front-end', policy: 'require' },
          { name: 'bad', usage: 'back-end', policy: 'require', failAt: { phase, code } },
          { name: 'sys', usage: 'system', policy: 'require' },
        ]);
        const report = await runSnapshotSet(h.options);
        assert.equal(report.status, 'failed');
        assert.equal(report.error?.code, code);
        assert.equal(report.error?.phase, phase);
        assert.equal(report.error?.writer, 'bad');
        assert.match(report.error.message, /refuses/);
        const bad = report.writers.find((w) => w.name === 'bad')!;
        assert.equal(bad.state, `failed-at-${phase}`);
        assert.equal(bad.error?.code, code);
        for (const w of h.writers) assert.equal(w.definition.frozen(), false, `${w.name} is thawed`);
        for (const name of ['front', 'sys']) {
          assert.ok(h.log.includes(`${name}:abort`), `${name} was aborted: ${h.log.join(' ')}`);
          if (h.log.includes(`${name}:freeze`))
            assert.ok(
              h.log.indexOf(`${name}:thaw`) > h.log.indexOf(`${name}:freeze`),
              `${name} thawed after its freeze`,
            );
        }
        assert.ok(!h.log.some((l) => l.endsWith(':backup-complete')), 'no backup-complete after a failed set');
        const log = await events(h.options, report.id);
        const failAt = log.findIndex((e) => e.writer === 'bad' && e.event === 'fail' && e.phase === phase);
        assert.ok(failAt >= 0, 'the event log has the failure');
        assert.equal(log[failAt]!.error?.code, code);
        assert.ok(
          log.slice(failAt).some((e) => e.phase === 'abort' && e.writer === 'front'),
          'abort comes after the failure in the log',
        );
        assert.ok(log.some((e) => e.phase === 'shutdown' && e.writer === 'sys' && e.event === 'end'));
      });
    }
  }

  test('prefer: a failing writer falls back to crash, the others stay application, status partial', async () => {
    const h = harness([
      { name: 'good', usage: 'back-end' },
      { name: 'bad', usage: 'back-end', failAt: { phase: 'freeze', code: 'nonretryable' } },
    ]);
    const report = await runSnapshotSet(h.options);
    assert.equal(report.status, 'partial');
    assert.equal(report.components.find((c) => c.writer === 'good')!.consistency, 'application');
    const bad = report.components.find((c) => c.writer === 'bad')!;
    assert.equal(bad.consistency, 'crash');
    assert.equal(bad.status, 'partial');
    assert.equal(bad.error?.code, 'nonretryable');
    assert.equal(report.snapshots.length, 2, 'the snapshot was still taken');
    assert.ok(h.log.includes('bad:abort'));
    assert.ok(!h.log.includes('good:abort'));
  });

  test('errors after thaw and a good commit are benign and do not lower consistency', async () => {
    const h = harness(
      [
        { name: 'a', failAt: { phase: 'post-snapshot', code: 'retryable' }, policy: 'require' },
        { name: 'b', failAt: { phase: 'backup-complete', code: 'nonretryable' }, policy: 'require' },
      ],
      { paths: [] },
    );
    const report = await runSnapshotSet(h.options);
    assert.equal(report.status, 'succeeded');
    assert.equal(report.consistency, 'application');
    assert.deepEqual(report.benign.map((b) => [b.writer, b.phase, b.benign]).sort(), [
      ['a', 'post-snapshot', true],
      ['b', 'backup-complete', true],
    ]);
  });
});

describe('snapshot set: deadlines, policy off, shutdown and the host lock', () => {
  test('a writer that never answers freeze: not-responding after the freeze deadline, others thawed', async () => {
    const h = harness(
      [
        { name: 'first', usage: 'front-end', policy: 'require' },
        { name: 'mute', usage: 'back-end', policy: 'require', hangAt: 'freeze', ignoreSignal: true },
      ],
      { freezeTimeoutMs: 400 },
    );
    const t0 = performance.now();
    const report = await runSnapshotSet(h.options);
    const took = performance.now() - t0;
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.code, 'not-responding');
    assert.equal(report.error?.phase, 'freeze');
    assert.equal(report.writers.find((w) => w.name === 'mute')!.state, 'failed-at-freeze');
    assert.equal(h.writers[0]!.definition.frozen(), false);
    assert.ok(took < 3_000, `the set ended in ${took} ms`);
    const firstWindow = report.writers.find((w) => w.name === 'first')!.freezeWindowMs!;
    assert.ok(firstWindow < 1_400, `the frozen writer was held ${firstWindow} ms (deadline 400 ms)`);
  });

  test('the commit deadline fails the set with timeout and thaws everyone', async () => {
    const many = join(root, 'many');
    await mkdir(many, { recursive: true });
    await Promise.all(Array.from({ length: 400 }, (_, i) => writeFile(join(many, `f${i}`), Buffer.alloc(8192, i))));
    const h = harness([{ name: 'w', policy: 'require' }], { paths: [many], commitTimeoutMs: 2 });
    const report = await runSnapshotSet(h.options);
    assert.equal(report.status, 'failed');
    assert.equal(report.error?.code, 'timeout');
    assert.equal(report.error?.phase, 'commit');
    assert.match(report.error.message, /commitTimeout/);
    assert.equal(h.writers[0]!.definition.frozen(), false);
    assert.ok(h.log.includes('w:abort'));
  });

  test('policy off: the writer is not frozen, its files are taken at crash level, the set succeeds', async () => {
    const h = harness([{ name: 'lazy', policy: 'off' }], { paths: [] });
    const report = await runSnapshotSet(h.options);
    assert.equal(report.status, 'succeeded');
    assert.equal(report.consistency, 'crash');
    assert.ok(!h.log.includes('lazy:freeze'));
  });

  test('a session that fails to close is reported as a shutdown failure and changes nothing else', async () => {
    const h = harness([{ name: 'db' }], { paths: [] });
    const endpoint = h.writers[0]!.endpoint;
    const writer: SetWriter = {
      ...h.writers[0]!,
      endpoint: {
        ...endpoint,
        openSession: async (request) => {
          const session = await endpoint.openSession(request);
          return {
            close: async () => {
              await session.close();
              throw new Error('the socket was gone');
            },
          };
        },
      },
    };
    const seen: SetEvent[] = [];
    const report = await runSnapshotSet({ ...h.options, writers: [writer], onEvent: (e) => seen.push(e) });
    assert.equal(report.status, 'succeeded');
    assert.equal(report.consistency, 'application');
    const logged = await events(h.options, report.id);
    const closing = logged.filter((e) => e.phase === 'shutdown' && e.event === 'fail');
    assert.deepEqual(
      closing.map((e) => [e.writer, e.error?.code, e.error?.message]),
      [['db', 'nonretryable', 'the socket was gone']],
    );
    assert.deepEqual(
      seen.filter((e) => e.phase === 'shutdown' && e.event === 'fail').map((e) => e.writer),
      ['db'],
    );
  });

  test('one set per host: a second set gets set-in-progress; a stale lock is taken over', async () => {
    const h = harness([{ name: 'slow', hangAt: 'prepare-snapshot', ignoreSignal: false }], { callTimeoutMs: 800 });
    const first = runSnapshotSet(h.options);
    await new Promise((r) => setTimeout(r, 200));
    const h2 = harness([{ name: 'other' }], { stateDir: h.options.stateDir });
    await assert.rejects(
      runSnapshotSet(h2.options),
      (e: Error & { code?: string }) => e.code === 'set-in-progress' && /being created/.test(e.message),
    );
    await first;
    await mkdir(join(h.options.stateDir, 'locks'), { recursive: true });
    await writeFile(
      join(h.options.stateDir, 'locks', 'set.lock'),
      JSON.stringify({ pid: 2 ** 22 + 12345, setId: 'ghost', startedAt: 'then' }),
    );
    const report = await runSnapshotSet(h2.options);
    assert.equal(report.status, 'succeeded');
    // A lock whose pid lives again in another process (pid reuse: here our own pid, started at another time) is stale too.
    await writeFile(
      join(h.options.stateDir, 'locks', 'set.lock'),
      JSON.stringify({ pid: process.pid, start: 'another-boot:12345', setId: 'reused', startedAt: 'then' }),
    );
    assert.equal((await runSnapshotSet(h2.options)).status, 'succeeded', 'a reused pid does not hold the host');
  });
});
