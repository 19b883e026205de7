import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../model/index.ts';
import { scriptedWriter } from '../../../test/helpers/scripted-writer.ts';
import { createWriterRuntime } from './runtime.ts';

const setId = 'set-1';

async function prepareToFreeze(runtime: ReturnType<typeof createWriterRuntime>, id = setId): Promise<void> {
  await runtime.prepareBackup({ setId: id, backupType: 'full', components: [] });
  await runtime.prepareSnapshot({ setId: id });
}

describe('writer runtime: phases, order and failures', () => {
  test('runs the phases in order and reports each state', async () => {
    const log: string[] = [];
    const definition = scriptedWriter({ name: 'w', log });
    const runtime = createWriterRuntime(definition);
    assert.equal((await runtime.status()).state, 'stable');
    await prepareToFreeze(runtime);
    assert.equal((await runtime.status()).state, 'waiting-for-freeze');
    await runtime.freeze({ setId, thawDeadlineMs: 5000 });
    assert.equal((await runtime.status()).state, 'waiting-for-thaw');
    assert.equal(definition.frozen(), true);
    const thawed = await runtime.thaw({ setId });
    assert.equal(thawed.selfThawed, false);
    assert.equal(definition.frozen(), false);
    assert.equal((await runtime.status()).state, 'waiting-for-post-snapshot');
    await runtime.postSnapshot({ setId, snapshots: [] });
    assert.equal((await runtime.status()).state, 'waiting-for-backup-complete');
    await runtime.backupComplete({ setId, backupType: 'full', components: [] });
    await runtime.shutdown({ setId });
    assert.equal((await runtime.status()).state, 'stable');
    assert.deepEqual(log, [
      'w:prepare-backup',
      'w:prepare-snapshot',
      'w:freeze',
      'w:thaw',
      'w:post-snapshot',
      'w:backup-complete',
    ]);
  });

  test('refuses phases out of order and another set while one is in progress', async () => {
    const runtime = createWriterRuntime(scriptedWriter({ name: 'w', log: [] }));
    await runtime.prepareBackup({ setId, backupType: 'full', components: [] });
    await assert.rejects(
      runtime.freeze({ setId, thawDeadlineMs: 1000 }),
      (e: QuiesceError) => e.code === 'protocol' && /out of order/.test(e.message),
    );
    await assert.rejects(
      runtime.prepareBackup({ setId: 'other', backupType: 'full', components: [] }),
      (e: QuiesceError) => e.code === 'retryable' && /busy with set set-1/.test(e.message),
    );
    await assert.rejects(
      runtime.postSnapshot({ setId: 'other', snapshots: [] }),
      (e: QuiesceError) => e.code === 'protocol',
    );
    await runtime.shutdown({ setId });
    await runtime.prepareBackup({ setId: 'other', backupType: 'full', components: [] });
  });

  test('a failing handler sets failed-at-<phase> with its code', async () => {
    const runtime = createWriterRuntime(
      scriptedWriter({ name: 'w', log: [], failAt: { phase: 'prepare-snapshot', code: 'out-of-resources' } }),
    );
    await runtime.prepareBackup({ setId, backupType: 'full', components: [] });
    await assert.rejects(
      runtime.prepareSnapshot({ setId }),
      (e: QuiesceError) => e.code === 'out-of-resources' && e.phase === 'prepare-snapshot' && e.writer === 'w',
    );
    const status = await runtime.status();
    assert.equal(status.state, 'failed-at-prepare-snapshot');
    assert.equal(status.lastFailure?.code, 'out-of-resources');
    await runtime.abort({ setId });
    await runtime.shutdown({ setId });
    assert.equal(
      (await runtime.status()).state,
      'failed-at-prepare-snapshot',
      'the last failure stays visible until the next set',
    );
  });
});

describe('writer runtime: thaw guarantees', () => {
  test('the watchdog thaws at the deadline and the late thaw reports it', async () => {
    const definition = scriptedWriter({ name: 'w', log: [] });
    const runtime = createWriterRuntime(definition);
    await prepareToFreeze(runtime);
    await runtime.freeze({ setId, thawDeadlineMs: 100 });
    assert.equal(definition.frozen(), true);
    await sleep(250);
    assert.equal(definition.frozen(), false, 'thawed by its own watchdog');
    const status = await runtime.status();
    assert.equal(status.state, 'failed-at-thaw');
    assert.equal(status.lastFailure?.code, 'timeout');
    const thawed = await runtime.thaw({ setId });
    assert.equal(thawed.selfThawed, true);
    assert.ok(thawed.frozenMs >= 90 && thawed.frozenMs < 400, `frozen ${thawed.frozenMs} ms`);
    await runtime.shutdown({ setId });
  });

  test('losing the session while frozen thaws and aborts at once', async () => {
    const log: string[] = [];
    const definition = scriptedWriter({ name: 'w', log });
    const runtime = createWriterRuntime(definition);
    const session = await runtime.openSession({ setId });
    await prepareToFreeze(runtime);
    await runtime.freeze({ setId, thawDeadlineMs: 60_000 });
    await session.close();
    assert.equal(definition.frozen(), false);
    assert.deepEqual(log.slice(-2), ['w:thaw', 'w:abort']);
    assert.equal((await runtime.status()).setId, null, 'the set ended');
  });

  test('abort is idempotent, thaws first, and a late freeze after abort never stays frozen', async () => {
    const log: string[] = [];
    const definition = scriptedWriter({ name: 'w', log });
    const runtime = createWriterRuntime(definition);
    await prepareToFreeze(runtime);
    await runtime.freeze({ setId, thawDeadlineMs: 60_000 });
    await runtime.abort({ setId });
    await runtime.abort({ setId });
    assert.equal(definition.frozen(), false);
    assert.deepEqual(
      log.filter((l) => l === 'w:abort'),
      ['w:abort'],
    );
    await assert.rejects(runtime.postSnapshot({ setId, snapshots: [] }), /after abort/);
    await runtime.shutdown({ setId });

    const slow = scriptedWriter({ name: 'slow', log, hangAt: 'freeze' });
    const runtime2 = createWriterRuntime(slow);
    await prepareToFreeze(runtime2);
    const controller = new AbortController();
    const freezing = runtime2.freeze({ setId, thawDeadlineMs: 60_000 }, { signal: controller.signal });
    controller.abort();
    await assert.rejects(freezing);
    assert.equal(slow.frozen(), false);
    await runtime2.shutdown({ setId });
  });

  test('a thaw that fails during abort is recorded as the failure at thaw, not dropped', async () => {
    const log: string[] = [];
    const definition = scriptedWriter({ name: 'w', log, failAt: { phase: 'thaw', code: 'nonretryable' } });
    const runtime = createWriterRuntime(definition);
    await prepareToFreeze(runtime);
    await runtime.freeze({ setId, thawDeadlineMs: 60_000 });
    await runtime.abort({ setId });
    assert.deepEqual(log.slice(-2), ['w:thaw', 'w:abort'], 'abort still runs after the failed thaw');
    const status = await runtime.status();
    assert.equal(status.state, 'failed-at-thaw');
    assert.match(status.lastFailure?.message ?? '', /refuses thaw/);
    await runtime.shutdown({ setId });
  });
});
