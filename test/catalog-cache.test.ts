// A damaged catalog cache (issue 19, item 5): `stateDir/catalog/<repository>.sqlite` truncated,
// garbage or zeroed. It is a cache: backups, restore and backup each rebuild it from the
// repository, give the right answer with exit 0, and say so in one line, with no stack trace.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const PASSWORD = 'a long and secret password';
let dir: string;
let config: string;
let data: string;
let cacheFile: string;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

const DAMAGES: Record<string, (file: string) => Promise<void>> = {
  'truncated by half': async (file) => truncate(file, (await stat(file)).size >> 1),
  garbage: async (file) => writeFile(file, randomBytes((await stat(file)).size)),
  zeroed: async (file) => writeFile(file, Buffer.alloc((await stat(file)).size)),
};

function assertRebuiltOnce(stderr: string): void {
  const lines = stderr.split('\n').filter((line) => line.includes('catalog cache'));
  assert.equal(lines.length, 1, stderr);
  assert.match(
    lines[0]!,
    /^quiesce: the catalog cache .*\.sqlite was damaged \(.+\): removed it; it is rebuilt from the repository's manifests$/,
  );
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(stderr, /SqliteError/);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-catalog-cache-'));
  data = join(dir, 'data');
  await mkdir(data, { recursive: true });
  await writeFile(join(data, 'a.txt'), 'the file\n');
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(dir, 'repo')}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  assert.equal(quiesce('init', '--config', config).code, 0);
  // A few sets, so the cache spans several pages and half of it is a broken database.
  for (let i = 0; i < 3; i++) assert.equal(quiesce('backup', '--config', config).code, 0);
  const files = (await readdir(join(dir, 'state', 'catalog'))).filter((name) => name.endsWith('.sqlite'));
  assert.equal(files.length, 1);
  cacheFile = join(dir, 'state', 'catalog', files[0]!);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a damaged catalog cache is rebuilt, and said once', () => {
  for (const [damage, apply] of Object.entries(DAMAGES)) {
    test(`${damage}: backups`, async () => {
      await apply(cacheFile);
      const listed = quiesce('backups', '--config', config, '--json');
      assert.equal(listed.code, 0, listed.stderr);
      assert.ok((JSON.parse(listed.stdout) as { sets: unknown[] }).sets.length >= 3, listed.stdout);
      assertRebuiltOnce(listed.stderr);
      const again = quiesce('backups', '--config', config);
      assert.equal(again.code, 0);
      assert.doesNotMatch(again.stderr, /catalog cache/, 'the rebuilt cache is sound');
    });

    test(`${damage}: restore`, async () => {
      await apply(cacheFile);
      const target = join(dir, `restore-${damage.replace(/ /g, '-')}`);
      const restored = quiesce('restore', 'latest', '--config', config, '--target', target);
      assert.equal(restored.code, 0, restored.stderr);
      assert.equal(await readFile(join(target, data, 'a.txt'), 'utf8'), 'the file\n');
      assertRebuiltOnce(restored.stderr);
    });

    test(`${damage}: backup`, async () => {
      await apply(cacheFile);
      const backup = quiesce('backup', '--config', config, '--json');
      assert.equal(backup.code, 0, backup.stderr);
      assert.equal((JSON.parse(backup.stdout) as { status: string }).status, 'succeeded');
      assertRebuiltOnce(backup.stderr);
    });
  }
});
