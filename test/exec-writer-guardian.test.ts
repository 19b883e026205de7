// A killed or stopped requester cannot leave an exec writer's application frozen: the thaw steps
// run in a guardian of their own session (src/writers/exec/thaw-guardian.ts), at once when
// `quiesce backup` is SIGKILLed and at the thaw deadline when it is SIGSTOPped, exactly once, even
// after the stopped requester resumes and asks for the thaw itself.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QUIESCE_BIN, runQuiesce } from './helpers/cli.ts';

const PASSWORD = 'kill the requester';
const FREEZE_TIMEOUT_MS = 2000;
const RUNS = 20;
let dir: string;
let config: string;
let log: string;
let marker: string;
let app: ChildProcess;

function state(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2)[0]!;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The log's lines `freeze <ms>` and `thaw <ms>` (ms since the epoch). */
async function entries(): Promise<{ freezes: number[]; thaws: number[] }> {
  const lines = (await readFile(log, 'utf8')).trim().split('\n').filter(Boolean);
  const at = (word: string) => lines.filter((l) => l.startsWith(`${word} `)).map((l) => Number(l.split(' ')[1]));
  return { freezes: at('freeze'), thaws: at('thaw') };
}

async function until(what: string, limitMs: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`${what} within ${limitMs} ms`);
    await sleep(5);
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-exec-guardian-'));
  log = join(dir, 'scripts.log');
  marker = join(dir, 'in-freeze');
  app = spawn('sleep', ['600'], { stdio: 'ignore' });
  const pid = app.pid!;
  const freeze =
    `echo "freeze $(date +%s%3N)" >> ${log}; kill -STOP ${pid}; ` +
    `until grep -q "^State:.*stopped" /proc/${pid}/status; do sleep 0.005; done`;
  const thaw = `echo "thaw $(date +%s%3N)" >> ${log}; kill -CONT ${pid}`;
  await writeFile(join(dir, 'f.txt'), 'f\n');
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      `policy: { quiesce: require, freezeTimeout: ${FREEZE_TIMEOUT_MS}ms }`,
      'writers:',
      `  - { type: exec, name: app, usage: front-end, freeze: [/bin/sh, -c, ${JSON.stringify(freeze)}], thaw: [/bin/sh, -c, ${JSON.stringify(thaw)}] }`,
      // Frozen after app: the requester sits in this freeze, app frozen, until it is killed.
      `  - { type: exec, name: slow, usage: system, freeze: [/bin/sh, -c, "touch ${marker}; sleep 5"], thaw: /bin/true }`,
      `paths: [${join(dir, 'f.txt')}]`,
      `providers: { ${join(dir, 'f.txt')}: copy }`,
    ].join('\n'),
  );
  const init = runQuiesce(['init', '--config', config], { QUIESCE_PASSWORD: PASSWORD });
  assert.equal(init.code, 0, init.stderr);
});
after(async () => {
  app.kill('SIGCONT');
  app.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

test(`the requester SIGKILLed or SIGSTOPped inside the freeze, ${RUNS} times: thawed once, by the deadline + 1 s`, async (t) => {
  const killWaits: number[] = [];
  const stopLate: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const signal = run % 2 === 0 ? 'SIGKILL' : 'SIGSTOP';
    await writeFile(log, '');
    await rm(marker, { force: true });
    const child = spawn(process.execPath, [QUIESCE_BIN, 'backup', '--config', config, '--json'], {
      env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
      stdio: 'ignore',
    });
    try {
      await until('the set reached the slow freeze', 30_000, () => existsSync(marker));
      assert.equal(state(app.pid!), 'T', 'app is stopped by its freeze');
      await sleep(Math.random() * (FREEZE_TIMEOUT_MS - 600));
      const signalledAt = Date.now();
      child.kill(signal);
      await until('the thaw script ran', FREEZE_TIMEOUT_MS + 2000, async () => (await entries()).thaws.length > 0);
      const { freezes, thaws } = await entries();
      assert.equal(freezes.length, 1, `run ${run}: one freeze`);
      const late = thaws[0]! - (freezes[0]! + FREEZE_TIMEOUT_MS);
      assert.ok(late <= 1000, `run ${run} (${signal}): thawed ${late} ms after the deadline`);
      if (signal === 'SIGKILL') killWaits.push(thaws[0]! - signalledAt);
      else stopLate.push(late);
      await until('app runs again', 1000, () => state(app.pid!) !== 'T');
      if (signal === 'SIGSTOP') {
        child.kill('SIGCONT'); // It resumes, finds itself late, asks for the thaw: nothing runs again.
        await Promise.race([exited(child), sleep(2500)]);
        child.kill('SIGKILL');
      }
      await exited(child);
      await sleep(50);
      assert.equal((await entries()).thaws.length, 1, `run ${run} (${signal}): thawed exactly once`);
      assert.notEqual(state(app.pid!), 'T', `run ${run}: app is running`);
    } finally {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited(child);
    }
  }
  t.diagnostic(`SIGKILL to thaw: ${killWaits.join(', ')} ms`);
  t.diagnostic(`SIGSTOP: thaw relative to the deadline: ${stopLate.join(', ')} ms`);
});
