// A remote writer (served over gRPC on a socket of the registration directory, as a writer in
// another language is) through the real CLI: its component is shown once by its full name
// (`py/journal`, not `py/py/journal`), and `quiesce restore --component` calls its PreRestore
// before the files are written and its PostRestore after, with the component and the target.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { RestoreRequest, WriterMetadata } from '../src/model/index.ts';
import { serveWriter, type WriterServer } from '../src/rpc/index.ts';
import { createWriterRuntime } from '../src/writers/sdk/index.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
let dir: string;
let journal: string;
let config: string;
let server: WriterServer;
const calls: { method: string; request?: RestoreRequest; journalRestored?: boolean }[] = [];
let restoreTarget = '';

/** The CLI, run asynchronously: the writer it calls answers from this process. */
function quiesce(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { encoding: 'utf8', timeout: 60_000, env: { ...process.env, QUIESCE_PASSWORD: 'pw' } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-remote-restore-'));
  journal = join(dir, 'journal');
  await mkdir(journal);
  await writeFile(join(journal, 'entries.log'), 'one\ntwo\n');
  const metadata: WriterMetadata = {
    name: 'py',
    classId: 'example.journal',
    instanceId: journal,
    usage: 'back-end',
    components: [
      {
        name: 'journal',
        logicalPath: 'py',
        kind: 'files',
        selectable: true,
        readableAfterThaw: false,
        files: [{ path: journal, pattern: '', recursive: true, isLog: false }],
      },
    ],
    backupTypes: ['full', 'copy'],
    restoreMethod: 'stop-restore-start',
  };
  const restored = () => existsSync(join(restoreTarget, journal, 'entries.log'));
  const runtime = createWriterRuntime({
    metadata,
    freeze: async () => undefined,
    thaw: async () => undefined,
    preRestore: async (request) => {
      calls.push({ method: 'preRestore', request, journalRestored: restored() });
    },
    postRestore: async (request) => {
      calls.push({ method: 'postRestore', request, journalRestored: restored() });
    },
  });
  server = await serveWriter(runtime, join(dir, 'registered', 'py.sock'));
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'registered')}`,
      'policy: { quiesce: require }',
    ].join('\n'),
  );
  const init = await quiesce('init', '--config', config);
  assert.equal(init.code, 0, init.stderr);
  const backup = await quiesce('backup', '--config', config);
  assert.equal(backup.code, 0, backup.stderr + backup.stdout);
});
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('a remote writer through quiesce restore', () => {
  test('its component is shown once by its full name', async () => {
    const run = await quiesce('backups', '--config', config);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /\bpy\/journal:full\b/);
    assert.doesNotMatch(run.stdout, /py\/py\//);
  });

  test('restore --component calls PreRestore before the files and PostRestore after', async () => {
    restoreTarget = join(dir, 'restored');
    calls.length = 0;
    const run = await quiesce(
      'restore',
      'latest',
      '--config',
      config,
      '--component',
      'py/journal',
      '--target',
      restoreTarget,
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await readFile(join(restoreTarget, journal, 'entries.log'), 'utf8'), 'one\ntwo\n');
    assert.deepEqual(
      calls.map((c) => [c.method, c.journalRestored, c.request?.components, c.request?.target, c.request?.moreFollow]),
      [
        ['preRestore', false, ['py/journal'], restoreTarget, false],
        ['postRestore', true, ['py/journal'], restoreTarget, false],
      ],
    );
  });
});
