// A guest whose writers own no file (a service paused by a script) must still hold still while
// its host snapshots the guest's disks: the host's prepare-snapshot returns once the guest is
// frozen, and the guest thaws only at the host's thaw.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createAgentEndpoint } from '../src/agent/index.ts';
import type { WriterMetadata } from '../src/model/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';

const metadata: WriterMetadata = {
  name: 'queue',
  classId: 'test.queue',
  instanceId: 'queue',
  usage: 'back-end',
  components: [],
  backupTypes: ['full', 'copy'],
  restoreMethod: 'custom',
};

test('a guest with nothing of its own to capture stays frozen from the host prepare-snapshot to its thaw', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-guest-nothing-'));
  let paused = false;
  const queue = createWriterRuntime({
    metadata,
    freeze: async () => void (paused = true),
    thaw: async () => void (paused = false),
  });
  const guest = createAgentEndpoint({
    name: 'vm-queue',
    writers: [{ name: 'queue', policy: 'require', endpoint: queue }],
    paths: [],
    stateDir: join(dir, 'state'),
    stagingDir: join(dir, 'staging'),
    freezeTimeoutMs: 20_000,
    callTimeoutMs: 10_000,
    freezeFilesystems: false,
    freezeRoot: false,
  });
  const setId = 'nothing-to-capture-1';
  try {
    const session = await guest.openSession({ setId });
    await guest.prepareBackup({ setId, backupType: 'full', components: [] });
    const t0 = performance.now();
    await guest.prepareSnapshot({ setId }, { signal: AbortSignal.timeout(5_000) });
    const preparedMs = performance.now() - t0;
    assert.ok(preparedMs < 3_000, `the guest answered the host's prepare-snapshot after ${preparedMs.toFixed(0)} ms`);
    assert.equal(paused, true, 'the guest holds its writer frozen once prepare-snapshot answers');
    await guest.freeze({ setId, thawDeadlineMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(paused, true, 'still frozen while the host commits');
    const thawed = await guest.thaw({ setId });
    assert.equal(thawed.selfThawed, false);
    assert.ok(thawed.frozenMs >= 300, `frozen ${thawed.frozenMs} ms, across the host's commit`);
    assert.equal(paused, false, 'running again after the host thaws');
    await guest.backupComplete({ setId, backupType: 'full', components: [] });
    await guest.shutdown({ setId });
    const report = await guest.report({ setId });
    assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
    // No file system frozen and no file owned: the host's image of this guest is what a power
    // cut leaves, however still the service was, and the report must not claim more.
    assert.equal(report.consistency, 'crash');
    await session.close();
  } finally {
    await guest.close();
    await queue.close();
    await rm(dir, { recursive: true, force: true });
  }
});
