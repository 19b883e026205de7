// Every user-facing failure of the command line is one clear line and the documented exit
// status (2 bad usage or config, 1 a failure), never a stack trace: a bad restore target, an
// unknown repository scheme, a file where a repository should be, a missing S3 bucket,
// permission denied (run as nobody), unreadable or missing files, unknown flags.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startS3Server } from './helpers/s3-server.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const root = process.getuid?.() === 0;
const NOBODY = 65534;
let dir: string;
let config: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function quiesce(args: string[], options: { env?: Record<string, string>; asNobody?: boolean } = {}): Run {
  const command = options.asNobody ? 'setpriv' : process.execPath;
  const argv = options.asNobody
    ? [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, bin, ...args]
    : [bin, ...args];
  const result = spawnSync(command, argv, {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, QUIESCE_PASSWORD: 'pw', ...options.env },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The exit status, one `quiesce:` line matching `message`, and nothing of a stack. */
function assertClear(run: Run, exit: number, message: RegExp): void {
  assert.equal(run.code, exit, `exit status (stderr: ${run.stderr})`);
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack frame');
  assert.doesNotMatch(run.stderr, /file:\/\//, 'no file:// frame');
  assert.doesNotMatch(run.stderr, /\b[A-Z]\w*Error:/, 'no error class prefix');
  assert.doesNotMatch(run.stderr, /this is a bug/);
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line: ${run.stderr}`);
  assert.match(lines[0]!, /^quiesce: /);
  assert.match(lines[0]!, message);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-nostack-'));
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'data'));
  await writeFile(join(dir, 'data', 'a.txt'), 'a\n');
  await writeFile(join(dir, 'file'), 'not a directory\n');
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'registered')}`,
      `paths: [${join(dir, 'data')}]`,
    ].join('\n'),
  );
  const init = quiesce(['init', '--config', config]);
  assert.equal(init.code, 0, init.stderr);
  const backup = quiesce(['backup', '--config', config]);
  assert.equal(backup.code, 0, backup.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('no stack traces for bad input', () => {
  test('restore --target FILE: not a directory, exit 2', () => {
    const target = join(dir, 'file');
    const run = quiesce(['restore', 'latest', '--config', config, '--target', target]);
    assertClear(run, 2, new RegExp(`restore target ${target} is not a directory`));
  });

  test('restore --target FILE/sub: part of the path is not a directory, exit 2', () => {
    const target = join(dir, 'file', 'sub');
    const run = quiesce(['restore', 'latest', '--config', config, '--target', target]);
    assertClear(run, 2, new RegExp(`${target}: part of its path is not a directory`));
  });

  test('--repo gopher://x: an unsupported location, exit 2', () => {
    assertClear(quiesce(['backups', '--repo', 'gopher://x']), 2, /unsupported repository location "gopher:\/\/x"/);
    assertClear(quiesce(['init', '--repo', 'gopher://x']), 2, /use a local path or s3:\/\/bucket\/prefix/);
  });

  test('init --repo FILE: not a directory, exit 2', () => {
    const file = join(dir, 'file');
    assertClear(
      quiesce(['init', '--repo', file]),
      2,
      new RegExp(`cannot create a repository in ${file}: it is not a directory`),
    );
  });

  test('init into a missing S3 bucket: the bucket named, exit 1', async () => {
    const server = await startS3Server('present');
    try {
      const env = {
        AWS_ENDPOINT_URL: server.endpoint,
        AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
        AWS_REGION: 'us-east-1',
      };
      assertClear(
        quiesce(['init', '--repo', 's3://missing/x'], { env }),
        1,
        /the bucket missing does not exist; create it/,
      );
    } finally {
      await server.stop();
    }
  });

  test('config files that cannot be read: missing, a directory, exit 2', () => {
    assertClear(
      quiesce(['writers', '--config', join(dir, 'none.yaml')]),
      2,
      /none\.yaml: cannot read the config file: no such file/,
    );
    assertClear(quiesce(['writers', '--config', dir]), 2, /cannot read the config file: it is a directory/);
  });

  test('a password file that does not exist, exit 2', () => {
    const run = quiesce(['backups', '--config', config, '--password-file', join(dir, 'nopw')]);
    assertClear(run, 2, /cannot read the password file .*nopw/);
  });

  test('unknown flags and commands: commander names them, exit 2, no stack', () => {
    for (const args of [['backup', '--bogus'], ['bogus']]) {
      const run = quiesce(args);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, /unknown (option '--bogus'|command 'bogus')/);
      assert.doesNotMatch(run.stderr, /^\s+at /m);
    }
  });

  describe('permission denied (run as nobody)', { skip: root ? false : 'needs root to run as nobody' }, () => {
    test('a restore target nobody may not make, exit 2', async () => {
      // A repository nobody may lock, so the restore gets as far as its target.
      const mine = join(dir, 'nobody');
      await mkdir(mine);
      await chown(mine, NOBODY, NOBODY);
      const conf = join(mine, 'quiesce.yaml');
      await writeFile(
        conf,
        [
          `repository: ${join(mine, 'repo')}`,
          `stateDir: ${join(mine, 'state')}`,
          `stagingDir: ${join(mine, 'staging')}`,
          `paths: [${join(dir, 'data')}]`,
        ].join('\n'),
      );
      await chown(conf, NOBODY, NOBODY);
      assert.equal(quiesce(['init', '--config', conf], { asNobody: true }).code, 0);
      const backup = quiesce(['backup', '--config', conf], { asNobody: true });
      assert.equal(backup.code, 0, backup.stderr);
      const closed = join(dir, 'closed');
      await mkdir(closed, { mode: 0o755 });
      const run = quiesce(['restore', 'latest', '--config', conf, '--target', join(closed, 'r')], { asNobody: true });
      assertClear(run, 2, new RegExp(`cannot make the restore target ${closed}/r: permission denied`));
      // A target that exists but nobody may write into: the first file named, exit 1.
      const into = quiesce(['restore', 'latest', '--config', conf, '--target', closed], { asNobody: true });
      assertClear(into, 1, /permission denied/);
    });

    test('a repository nobody may not write to: the object named, exit 1', () => {
      assertClear(quiesce(['backups', '--config', config], { asNobody: true }), 1, /permission denied/);
    });

    test('a state directory nobody may not write to: the path named, exit 1', async () => {
      const run = quiesce(['snapshot', '--config', config], { asNobody: true });
      assertClear(run, 1, new RegExp(`cannot \\w+ ${join(dir, 'state')}\\S*: permission denied`));
    });

    test('a password file nobody may not read, exit 2', async () => {
      const file = join(dir, 'pw');
      await writeFile(file, 'pw\n', { mode: 0o600 });
      const run = quiesce(['backups', '--config', config, '--password-file', file], { asNobody: true });
      assertClear(run, 2, new RegExp(`cannot read the password file ${file}`));
    });

    test('a config file nobody may not read, exit 2', async () => {
      const file = join(dir, 'secret.yaml');
      await writeFile(file, 'paths: []\n', { mode: 0o600 });
      const run = quiesce(['writers', '--config', file], { asNobody: true });
      assertClear(run, 2, /secret\.yaml: cannot read the config file: permission denied/);
    });

    test('a read-only catalog cache: said plainly, exit 1', async () => {
      const mine = join(dir, 'nobody');
      const conf = join(mine, 'quiesce.yaml');
      // The cache exists, owned by root: nobody may read it but not write it.
      const state = join(dir, 'rostate');
      await writeFile(
        conf,
        [`repository: ${join(mine, 'repo')}`, `stateDir: ${state}`, `paths: [${join(dir, 'data')}]`].join('\n'),
      );
      assert.equal(quiesce(['backups', '--config', conf]).code, 0);
      spawnSync('chmod', ['-R', 'a+rX', state]);
      const run = quiesce(['backups', '--config', conf], { asNobody: true });
      assertClear(run, 1, /SQLite database could not be used: .*readonly|cannot unlink .*catalog.*permission denied/);
    });
  });
});
