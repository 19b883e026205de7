// The command line end to end: `quiesce writers`, `providers`, `snapshot` with a command, --keep
// and --release, --json, exit statuses, and bad config reported with file and line (exit 2).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SetReportSchema } from '../src/model/index.ts';
import { createBank } from '../src/cli/demo/bank.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
let dir: string;
let config: string;

function quiesce(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-cli-'));
  await mkdir(join(dir, 'files'));
  await writeFile(join(dir, 'files', 'note.txt'), 'hello\n');
  createBank(join(dir, 'shop.db'));
  const hooks = join(dir, 'hooks');
  await mkdir(hooks);
  await writeFile(join(hooks, '10-log'), `#!/bin/sh\necho "$1 $QUIESCE_SET_ID" >> ${join(dir, 'hooks.log')}\n`);
  await chmod(join(hooks, '10-log'), 0o755);
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'registered')}`,
      'writers:',
      `  - { type: sqlite, name: shop, path: ${join(dir, 'shop.db')} }`,
      `  - { type: exec, name: hooks, hooksDir: ${hooks}, usage: front-end }`,
      `paths: [${join(dir, 'files')}]`,
    ].join('\n'),
  );
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('quiesce command line', () => {
  test('writers lists every writer with class, instance, state and components', () => {
    const r = quiesce('writers', '--config', config);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /shop\s+quiesce\.sqlite\s+\S+shop\.db\s+stable/);
    assert.match(r.stdout, /hooks\s+quiesce\.exec/);
    assert.match(r.stdout, /component shop\/shop\.db \(database\)/);
    const json = JSON.parse(quiesce('writers', '--config', config, '--json').stdout) as {
      writers: { state: string }[];
    };
    assert.equal(json.writers.length, 2);
  });

  test('providers says which provider takes each path and why not the others', () => {
    const r = quiesce('providers', '--config', config, '--json');
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as {
      paths: { path: string; chosen: string; candidates: { name: string; support: { reason: string } }[] }[];
    };
    const files = json.paths.find((p) => p.path === join(dir, 'files'))!;
    assert.ok(files.chosen);
    assert.equal(files.candidates.length, 4);
    for (const c of files.candidates) assert.ok(c.support.reason.length > 0);
  });

  test('snapshot runs the command against the snapshot with its variables, then releases it', async () => {
    const out = join(dir, 'seen.txt');
    const r = quiesce(
      'snapshot',
      '--config',
      config,
      '--json',
      '--',
      `cat "$QUIESCE_SNAPSHOT_ROOT${join(dir, 'files', 'note.txt')}" > ${out}; echo "$QUIESCE_SET_ID" >> ${out}; test -f "$QUIESCE_SNAPSHOT_${join(
        dir,
        'shop.db',
      )
        .slice(1)
        .replace(/[^A-Za-z0-9]+/g, '_')
        .toUpperCase()}"`,
    );
    assert.equal(r.code, 0, r.stderr);
    const report = SetReportSchema.parse(JSON.parse(r.stdout));
    assert.equal(report.status, 'succeeded');
    assert.equal(report.components[0]!.consistency, 'application');
    const seen = (await readFile(out, 'utf8')).split('\n');
    assert.equal(seen[0], 'hello');
    assert.equal(seen[1], report.id);
    const log = await readFile(join(dir, 'hooks.log'), 'utf8');
    assert.match(log, new RegExp(`freeze ${report.id}\\nthaw ${report.id}`));
    for (const s of report.snapshots) assert.equal(existsSync(s.snapshot), false, `${s.snapshot} was released`);
    assert.ok(existsSync(join(dir, 'state', 'events', `${report.id}.jsonl`)), 'the event log is kept');
  });

  test('a failing command fails the set (exit 1) but thaws and releases everything', () => {
    const r = quiesce('snapshot', '--config', config, '--json', '--', 'exit 7');
    assert.equal(r.code, 1);
    const report = SetReportSchema.parse(JSON.parse(r.stdout));
    assert.equal(report.status, 'failed');
    assert.match(report.error!.message, /exit status 7/);
    assert.equal(
      report.components.find((c) => c.writer === 'shop')!.consistency,
      'application',
      'the snapshot itself was good',
    );
  });

  test('--keep keeps the set until --release', () => {
    const r = quiesce('snapshot', '--config', config, '--keep', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = SetReportSchema.parse(JSON.parse(r.stdout));
    assert.equal(report.kept, true);
    for (const s of report.snapshots) assert.ok(existsSync(s.snapshot), `${s.snapshot} is kept`);
    assert.match(quiesce('snapshot', '--config', config, '--list').stdout, new RegExp(report.id));
    const released = quiesce('snapshot', '--config', config, '--release', report.id);
    assert.equal(released.code, 0, released.stderr);
    for (const s of report.snapshots) assert.equal(existsSync(s.snapshot), false);
    assert.equal(
      quiesce('snapshot', '--config', config, '--release', report.id).code,
      2,
      'releasing twice is a usage error',
    );
  });

  test('a writer that vetoes under prefer gives a partial set and exit 3', async () => {
    const veto = join(dir, 'veto.yaml');
    const hooks = join(dir, 'veto-hooks');
    await mkdir(hooks, { recursive: true });
    await writeFile(
      join(hooks, '10-no'),
      '#!/bin/sh\n[ "$1" = freeze ] && { echo "cache is rebuilding, not now" >&2; exit 4; }\nexit 0\n',
    );
    await chmod(join(hooks, '10-no'), 0o755);
    await writeFile(
      veto,
      (await readFile(config, 'utf8')).replace(`hooksDir: ${join(dir, 'hooks')}`, `hooksDir: ${hooks}`),
    );
    const r = quiesce('snapshot', '--config', veto);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stdout, /partial/);
    assert.match(r.stdout, /cache is rebuilding, not now/);
    const strict = quiesce('snapshot', '--config', veto, '--quiesce', 'require', '--json');
    assert.equal(strict.code, 1);
    assert.equal(SetReportSchema.parse(JSON.parse(strict.stdout)).error?.phase, 'freeze');
    const writers = quiesce('writers', '--config', veto);
    assert.match(
      writers.stdout,
      /hooks\s+quiesce\.exec\s+\S+\s+failed-at-freeze\s+nonretryable at freeze: .*cache is rebuilding/,
      'the last failure stays visible',
    );
  });

  test('bad config: file, line and field, exit 2, nothing run', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(
      bad,
      ['writers:', '  - { type: sqlite, name: shop, path: relative/shop.db }', 'polcy: {}'].join('\n'),
    );
    const r = quiesce('snapshot', '--config', bad);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad\.yaml:2:\d+: writers\[0\]\.path: /);
    assert.match(r.stderr, /bad\.yaml:3:1: polcy: .*did you mean "policy"/);
    const missing = quiesce('writers', '--config', join(dir, 'nope.yaml'));
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /nope\.yaml/);
    assert.equal(quiesce('snapshot', '--config', config, '--quiesce', 'sometimes').code, 2);
    assert.equal(quiesce('no-such-command').code, 2);
  });

  test("the demo (the README's first command) proves every snapshot, backup, restore and guest consistent, exit 0", () => {
    const demo = spawnSync(process.execPath, [bin, 'demo'], { encoding: 'utf8', timeout: 180_000 });
    assert.equal(demo.status, 0, demo.stderr);
    assert.doesNotMatch(demo.stdout, /INCONSISTENT|DAMAGED/);
    assert.match(demo.stdout, /the restored bank\.db: integrity_check ok, sum 100000 \(consistent\)/);
    assert.match(demo.stdout, /check --read-data: .* no errors were found/);
    assert.match(demo.stdout, /guest vm1 \(quiesce agent\): succeeded, application/);
    assert.match(demo.stdout, /guest vm2 \(no agent\): succeeded, (crash|inconsistent)/);
    assert.match(demo.stdout, /saw 0 errors while quiesce worked/);
  });
});
