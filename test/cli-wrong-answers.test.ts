// Answers the command line used to get wrong: `restore --target /` refused, `restore --path`
// of nothing exiting 0 with "0 files", `providers` of a path that does not exist naming a
// provider, and a FIFO given as --config hanging the command.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const root = process.getuid?.() === 0;
let dir: string;
let data: string;
let config: string;

function quiesce(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, QUIESCE_PASSWORD: 'pw' },
  });
  return { code: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-answers-'));
  data = join(dir, 'data');
  await mkdir(join(data, 'sub'), { recursive: true });
  await writeFile(join(data, 'a.txt'), 'a\n');
  await writeFile(join(data, 'sub', 'b.txt'), 'b\n');
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'registered')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  assert.equal(quiesce('init', '--config', config).code, 0);
  const backup = quiesce('backup', '--config', config);
  assert.equal(backup.code, 0, backup.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('answers the command line gets right', () => {
  test('restore --target / puts the set back over the originals', { skip: !root && 'needs root' }, async () => {
    await writeFile(join(data, 'a.txt'), 'changed since the backup\n');
    await rm(join(data, 'sub'), { recursive: true });
    const run = quiesce('restore', 'latest', '--config', config, '--target', '/', '--path', data);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /restored set \S+ to \/: 2 files/);
    assert.equal(await readFile(join(data, 'a.txt'), 'utf8'), 'a\n');
    assert.equal(await readFile(join(data, 'sub', 'b.txt'), 'utf8'), 'b\n');
  });

  test('restore --path of nothing in the set names each such path, exit 1', () => {
    const target = join(dir, 'r1');
    const run = quiesce(
      'restore',
      'latest',
      '--config',
      config,
      '--target',
      target,
      '--path',
      '/no/such',
      '--path',
      join(data, 'a.txt'),
      '--path',
      join(data, 'nope'),
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, new RegExp(`holds nothing at /no/such, ${join(data, 'nope')}:`));
    assert.doesNotMatch(run.stderr, new RegExp(`${join(data, 'a.txt')}[,:]`), 'a path it holds is not named');
    assert.doesNotMatch(run.stdout, /0 files/);
    assert.equal(existsSync(join(target, data, 'a.txt')), false, 'nothing restored for a partly wrong request');
    // A path it holds restores as before.
    const good = quiesce('restore', 'latest', '--config', config, '--target', target, '--path', join(data, 'sub'));
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /1 files/);
  });

  test('providers of a path that does not exist is an error, exit 2', () => {
    const run = quiesce('providers', '/no/such/dir', data);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /no such file or directory: \/no\/such\/dir; name paths that exist/);
    assert.equal(run.stdout, '');
    assert.equal(quiesce('providers', data).code, 0);
  });

  test('a FIFO as --config is refused at once, not waited on', async () => {
    const fifo = join(dir, 'config.fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const started = Date.now();
    const run = quiesce('writers', '--config', fifo);
    assert.equal(run.signal, null, 'not killed at the timeout');
    assert.ok(Date.now() - started < 20_000);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /config\.fifo: cannot read the config file: it is a FIFO, not a regular file/);
  });

  test('a FIFO as a password file is refused at once too', () => {
    const fifo = join(dir, 'password.fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    for (const args of [
      ['backups', '--config', config, '--password-file', fifo],
      ['key', 'add', '--config', config, '--new-password-file', fifo],
    ]) {
      const run = quiesce(...args);
      assert.equal(run.signal, null, 'not killed at the timeout');
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, /password file .*password\.fifo: it is a FIFO, not a regular file/);
    }
  });

  test('a config file larger than 1 MiB is refused, exit 2', async () => {
    const big = join(dir, 'big.yaml');
    await writeFile(big, `# ${'x'.repeat(2 << 20)}\npaths: []\n`);
    const run = quiesce('writers', '--config', big);
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /big\.yaml: cannot read the config file: it is \d+ bytes; such a file is at most 1048576 bytes/,
    );
  });
});
