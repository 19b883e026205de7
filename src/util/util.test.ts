import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import {
  awaitedLater,
  deferred,
  InFlightLimit,
  isErrno,
  isRecord,
  messageOf,
  processAlive,
  processStart,
  recordedProcessAlive,
  untilAborted,
} from './index.ts';

test('untilAborted answers the promise, or rejects with the reason as soon as the signal aborts', async () => {
  assert.equal(await untilAborted(Promise.resolve(7), new AbortController().signal), 7);
  const controller = new AbortController();
  const never = new Promise<number>(() => undefined);
  const waiting = untilAborted(never, controller.signal);
  controller.abort(new Error('deadline'));
  await assert.rejects(waiting, /deadline/);
  await assert.rejects(untilAborted(Promise.resolve(1), AbortSignal.abort(new Error('already'))), /already/);
});

test('deferred settles from outside', async () => {
  const gate = deferred<string>();
  gate.resolve('open');
  assert.equal(await gate.promise, 'open');
  const refused = deferred<string>();
  refused.reject(new Error('no'));
  await assert.rejects(refused.promise, /no/);
});

test('InFlightLimit never lets more than its limit run, and drain waits for all', async () => {
  const limit = new InFlightLimit(2);
  let running = 0;
  let peak = 0;
  const job = async () => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((resolve) => setTimeout(resolve, 5));
    running--;
  };
  for (let i = 0; i < 7; i++) {
    await limit.room();
    limit.track(job());
  }
  limit.track(Promise.reject(new Error("a failure is the awaiter's, not the limiter's")).catch(() => undefined));
  await limit.drain();
  assert.equal(peak, 2);
  assert.equal(running, 0);
  assert.equal(limit.size, 0);
  assert.throws(() => new InFlightLimit(0), RangeError);
});

test('error helpers read any thrown value', () => {
  assert.equal(messageOf(new Error('x')), 'x');
  assert.equal(messageOf('plain'), 'plain');
  assert.equal(isErrno(Object.assign(new Error('gone'), { code: 'ENOENT' }), 'EEXIST', 'ENOENT'), true);
  assert.equal(isErrno(new Error('gone'), 'ENOENT'), false);
  assert.equal(isRecord({}), true);
  assert.equal(isRecord([]), false);
  assert.equal(isRecord(null), false);
});

test('processAlive tells a live pid from a gone one', async () => {
  assert.equal(processAlive(process.pid), true);
  assert.equal(processAlive(2 ** 22 + 12345), false);
  const later = awaitedLater(Promise.reject(new Error('later')));
  await new Promise((resolve) => setImmediate(resolve));
  await assert.rejects(later, /later/);
});

test('a recorded process is alive while its pid runs the process that started then, not a reused pid', async (t) => {
  if (processStart(process.pid) === null) {
    t.skip('no /proc here to read start times from');
    return;
  }
  // A name with spaces and parentheses: the start time is found after the name, not by counting blanks.
  const child = spawn(process.execPath, ['-e', "process.title = 'a) b (c'; setInterval(() => {}, 1000)"], {
    stdio: 'ignore',
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const start = processStart(child.pid!);
  assert.match(start ?? '', /^[0-9a-f-]+:\d+$/);
  assert.equal(processStart(child.pid!), start, 'the same answer each time');
  assert.equal(recordedProcessAlive(child.pid!, start), true);
  assert.equal(recordedProcessAlive(child.pid!, undefined), true, 'an older record: the pid alone');
  assert.equal(recordedProcessAlive(child.pid!, `${start}0`), false, 'the pid of another process: reused');
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(recordedProcessAlive(child.pid!, start), false, 'gone');
  assert.notEqual(processStart(process.pid), start, 'two processes, two starts');
});
