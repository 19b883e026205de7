// An exec writer that names the paths its service writes: they are its components, copied inside
// its freeze, and `application` when it quiesced. A real process appends fixed-size records; the
// freeze script stops it, the thaw script resumes it, and the restored file ends on a whole record
// and holds exactly the records up to some point. Also: `prepare` runs in prepare-snapshot before
// the freeze, and every script gets the set's id, phase, writer, backup type and thaw deadline.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SetReport } from '../src/model/index.ts';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const PASSWORD = 'records in a row';
const RECORD = 64;
let dir: string;
let app: ChildProcess | undefined;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

/** Record i: its number, its number again as a check, padding, a newline: 64 bytes. */
function record(i: number): string {
  const head = `${String(i).padStart(10, '0')}:${String(i * 7919).padStart(16, '0')}:`;
  return `${head}${'r'.repeat(RECORD - head.length - 1)}\n`;
}

/** Appends records to `file` as fast as it can, one write each; its pid goes to `pidFile`. */
const APPENDER = `
const fs = require('node:fs');
const [file, pidFile] = process.argv.slice(1);
const RECORD = ${RECORD};
${record.toString()}
const fd = fs.openSync(file, 'a');
fs.writeFileSync(pidFile, String(process.pid));
let i = 0;
const burst = () => { for (let n = 0; n < 20; n++) fs.writeSync(fd, record(i++)); setTimeout(burst, 1); };
burst();
`;

async function writeConfig(name: string, lines: string[]): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      ...lines,
    ].join('\n'),
  );
  return file;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-exec-paths-'));
});
after(async () => {
  app?.kill('SIGCONT');
  app?.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

test("paths are the writer's components: copied while it is frozen, whole records only, level application", async () => {
  const data = join(dir, 'app');
  await mkdir(data);
  const file = join(data, 'records.log');
  const pidFile = join(dir, 'app.pid');
  const log = join(dir, 'scripts.log');
  app = spawn(process.execPath, ['-e', APPENDER, file, pidFile], { stdio: 'ignore' });
  while (!existsSync(pidFile)) await sleep(5);
  await sleep(100);
  const freeze =
    `echo freeze >> ${log}; pid=$(cat ${pidFile}); kill -STOP $pid; ` +
    'until grep -q "^State:.*stopped" /proc/$pid/status; do sleep 0.005; done';
  const thaw = `echo thaw >> ${log}; kill -CONT $(cat ${pidFile})`;
  const config = await writeConfig('paths', [
    'policy: { quiesce: require, freezeTimeout: 20s }',
    'writers:',
    `  - { type: exec, name: recorder, freeze: [/bin/sh, -c, ${JSON.stringify(freeze)}], thaw: [/bin/sh, -c, ${JSON.stringify(thaw)}], paths: [${data}] }`,
    `providers: { ${data}: copy }`,
  ]);
  assert.equal(quiesce('init', '--config', config).code, 0);

  const writers = quiesce('writers', '--config', config, '--json');
  assert.equal(writers.code, 0, writers.stderr);
  assert.match(writers.stdout, /recorder/);

  const backup = quiesce('backup', '--config', config, '--json');
  assert.equal(backup.code, 0, backup.stderr);
  const report = JSON.parse(backup.stdout) as SetReport;
  const component = report.components.find((c) => c.writer === 'recorder');
  assert.equal(component?.component, 'recorder/app');
  assert.equal(component.consistency, 'application', JSON.stringify(report.components));
  assert.equal(report.status, 'succeeded');
  assert.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), ['freeze', 'thaw']);

  const target = join(dir, 'restored');
  const restored = quiesce('restore', 'latest', '--config', config, '--target', target);
  assert.equal(restored.code, 0, restored.stderr);
  const copy = await readFile(join(target, file), 'utf8');
  assert.ok(copy.length > 0 && copy.length % RECORD === 0, `the copy (${copy.length} bytes) ends on a whole record`);
  const count = copy.length / RECORD;
  for (let i = 0; i < count; i++) {
    const got = copy.slice(i * RECORD, (i + 1) * RECORD);
    if (got !== record(i)) assert.fail(`record ${i} of ${count} is ${JSON.stringify(got)}`);
  }
  // The application runs on after the thaw: the live file grows past the copy.
  await sleep(100);
  assert.ok((await readFile(file)).length > copy.length, 'the appender was resumed');
});

test('prepare runs in prepare-snapshot before the freeze; the scripts see set, phase, writer, type and deadline', async () => {
  const log = join(dir, 'env.log');
  const show = `echo "$QUIESCE_PHASE|$QUIESCE_SET_ID|$QUIESCE_WRITER|$QUIESCE_BACKUP_TYPE|$QUIESCE_THAW_DEADLINE|$QUIESCE_THAW_DEADLINE_MS" >> ${log}`;
  const files = join(dir, 'plain');
  await mkdir(files);
  await writeFile(join(files, 'a.txt'), 'a\n');
  // A second writer, frozen first (front-end), notes when its freeze runs: after every prepare.
  const first = `echo first-freeze >> ${log}`;
  const config = await writeConfig('env', [
    'policy: { quiesce: require, freezeTimeout: 7s }',
    'writers:',
    `  - { type: exec, name: early, usage: front-end, freeze: [/bin/sh, -c, ${JSON.stringify(first)}], thaw: /bin/true }`,
    `  - { type: exec, name: env, usage: back-end, prepare: [/bin/sh, -c, ${JSON.stringify(show)}], freeze: [/bin/sh, -c, ${JSON.stringify(show)}], thaw: [/bin/sh, -c, ${JSON.stringify(show)}] }`,
    `paths: [${files}]`,
    `providers: { ${files}: copy }`,
  ]);
  const started = Date.now();
  const backup = quiesce('backup', '--config', config, '--json', '--type', 'copy');
  assert.equal(backup.code, 0, backup.stderr);
  const setId = (JSON.parse(backup.stdout) as SetReport).id;
  const lines = (await readFile(log, 'utf8')).trim().split('\n');
  assert.equal(lines[0]?.split('|')[0], 'prepare');
  assert.equal(lines[1], 'first-freeze', 'prepare ran before any writer froze');
  const [prepare, freeze, thaw] = [lines[0], lines[2], lines[3]].map((line) => line!.split('|'));
  assert.deepEqual(prepare, ['prepare', setId, 'env', 'copy', '', '']);
  assert.deepEqual(freeze!.slice(0, 4), ['freeze', setId, 'env', 'copy']);
  assert.deepEqual(thaw!.slice(0, 4), ['thaw', setId, 'env', 'copy']);
  const deadlineMs = Number(freeze![5]);
  assert.equal(new Date(freeze![4]!).getTime(), deadlineMs, 'the ISO time and the ms say the same');
  assert.match(freeze![4]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(
    deadlineMs > started + 7000 - 100 && deadlineMs < Date.now() + 7000,
    `deadline ${deadlineMs - started} ms after the start`,
  );
  assert.deepEqual(thaw!.slice(4), freeze!.slice(4), 'thaw sees the same deadline');
});

test('a failing prepare vetoes the set with a clear message', async () => {
  const config = await writeConfig('veto', [
    'policy: { quiesce: require }',
    'writers:',
    '  - { type: exec, name: cp, prepare: [/bin/sh, -c, "echo checkpoint refused >&2; exit 4"], freeze: /bin/true, thaw: /bin/true }',
    `paths: [${join(dir, 'plain')}]`,
    `providers: { ${join(dir, 'plain')}: copy }`,
  ]);
  const backup = quiesce('backup', '--config', config);
  assert.equal(backup.code, 1, backup.stdout + backup.stderr);
  assert.match(
    backup.stdout + backup.stderr,
    /exec writer cp vetoed the set in prepare-snapshot: prepare script \/bin\/sh -c .* exited with code 4: checkpoint refused/,
  );
});
