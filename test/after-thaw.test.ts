// A component marked readable after thaw (a database in backup mode, whose log repairs a fuzzy
// copy) is copied once the writers run again: its writer's thaw leaves a mark in the file, the
// snapshot holds the mark, and the other writer's freeze window is shorter than that copy.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runSnapshotSet } from '../src/coordinator/index.ts';
import { CopyProvider } from '../src/providers/index.ts';
import { createWriterRuntime, type WriterDefinition } from '../src/writers/sdk/index.ts';
import { createSqliteWriter } from '../src/writers/sqlite/index.ts';
import { checkBank, createBank, TOTAL } from '../src/cli/demo/bank.ts';

const MARK = '\nthawed: the copy is later\n';
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-after-thaw-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A writer whose one component may be read after thaw; its thaw appends `MARK` to the file. */
function backupModeWriter(file: string): WriterDefinition {
  return {
    metadata: {
      name: 'archive',
      classId: 'test.backup-mode',
      instanceId: file,
      usage: 'back-end',
      components: [
        {
          name: 'data',
          logicalPath: '',
          kind: 'database',
          selectable: true,
          readableAfterThaw: true,
          files: [{ path: file, pattern: '*', recursive: false, isLog: false }],
        },
      ],
      backupTypes: ['full', 'copy'],
      restoreMethod: 'restore-if-can-replace',
    },
    freeze: async () => {},
    thaw: async () => {
      await appendFile(file, MARK);
    },
  };
}

test('a component readable after thaw is copied after thaw, outside the other writers freeze', async () => {
  const big = join(dir, 'archive.dat');
  // 256 MiB: its copy takes far longer than a SQLite freeze.
  const block = Buffer.alloc(1 << 20, 7);
  await writeFile(big, '');
  for (let i = 0; i < 256; i++) await appendFile(big, block);
  const dbPath = join(dir, 'bank.db');
  createBank(dbPath);
  const bank = createWriterRuntime(createSqliteWriter({ name: 'bank', path: dbPath, stateDir: join(dir, 'writers') }));
  const archive = createWriterRuntime(backupModeWriter(big));
  const provider = new CopyProvider();
  const copies: { path: string; afterThaw: boolean }[] = [];
  let afterThawMs = 0;
  try {
    const report = await runSnapshotSet({
      kind: 'snapshot',
      backupType: 'full',
      writers: [
        { name: 'bank', endpoint: bank, policy: 'require' },
        { name: 'archive', endpoint: archive, policy: 'require' },
      ],
      paths: [],
      stateDir: join(dir, 'state'),
      stagingDir: join(dir, 'staging'),
      resolveProvider: async () => ({ provider, level: 'inconsistent' }),
      onEvent: (event) => {
        if (event.phase === 'commit' && event.provider === 'copy' && event.event === 'end') {
          const late = event.result?.includes('after thaw') === true;
          copies.push({ path: event.result ?? '', afterThaw: late });
          if (late) afterThawMs = event.durationMs ?? 0;
        }
      },
      use: async (view) => {
        const copy = view.resolve(big)!;
        const text = await readFile(copy);
        assert.equal(text.length, 256 * (1 << 20) + Buffer.byteLength(MARK), 'the whole file and the thaw mark');
        assert.ok(text.subarray(text.length - MARK.length).toString() === MARK, 'copied after its writer thawed');
        const check = await checkBank(view.resolve(dbPath)!);
        assert.equal(check.integrity, 'ok');
        assert.equal(check.sum, TOTAL);
      },
    });
    assert.equal(report.status, 'succeeded', JSON.stringify(report.error));
    assert.deepEqual(
      copies.map((c) => c.afterThaw),
      [false, true],
      'one copy in the freeze (the bank), one after thaw (the archive)',
    );
    const bankWindow = report.writers.find((w) => w.name === 'bank')!.freezeWindowMs!;
    assert.ok(bankWindow < afterThawMs, `the bank froze ${bankWindow} ms, less than the ${afterThawMs} ms copy`);
    assert.ok(report.freezeWindowMs! < afterThawMs, `the freeze window ${report.freezeWindowMs} ms holds no late copy`);
    const component = report.components.find((c) => c.writer === 'archive')!;
    assert.equal(component.consistency, 'application', 'its writer quiesced; its log repairs the fuzzy copy');
  } finally {
    await bank.close();
    await archive.close();
  }
});
