// `quiesce init` over a location that holds objects of a repository but no config (issue 19,
// item 3): refused, naming what it found, and nothing written, so the old repository opens again
// once its config is back. Local directory through the command line, and S3 (s3rver).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initRepository, openBackend, openRepository } from '../src/repository/index.ts';
import { TEST_REPOSITORY_OPTIONS } from './helpers/repository.ts';
import { startS3Server } from './helpers/s3-server.ts';
import { runQuiesce, type CliResult, writePlainConfig } from './helpers/cli.ts';

const PASSWORD = 'a long and secret password';
let dir: string;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

function writeConfig(name: string, paths: string[], repo: string): Promise<string> {
  return writePlainConfig(dir, name, paths, repo);
}

async function filesUnder(root: string): Promise<string[]> {
  return (await readdir(root, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(root.length + 1))
    .sort();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-init-existing-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('init over a repository whose config was deleted', () => {
  test('a local directory: refused with exit 2, nothing written, the old sets restore once the config is back', async () => {
    const data = join(dir, 'data');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'a.txt'), 'the first file\n');
    const repo = join(dir, 'repo');
    const config = await writeConfig('local', [data], repo);
    assert.equal(quiesce('init', '--config', config).code, 0);
    const backup = quiesce('backup', '--config', config);
    assert.equal(backup.code, 0, backup.stderr);
    const savedConfig = await readFile(join(repo, 'config'));
    await rm(join(repo, 'config'));
    const before = await filesUnder(repo);

    const init = quiesce('init', '--config', config);
    assert.equal(init.code, 2, init.stderr);
    assert.match(init.stderr, /has no config but holds objects of a repository/);
    assert.match(init.stderr, /key files \(keys\/[0-9a-f]{64}\)/);
    assert.match(init.stderr, /packs \(data\/[0-9a-f]{64}\)/);
    assert.match(init.stderr, /manifests \(manifests\/[0-9a-f]{64}\)/);
    assert.match(init.stderr, /put its config back/);
    assert.doesNotMatch(init.stderr, /^\s+at /m);
    assert.deepEqual(await filesUnder(repo), before, 'init wrote nothing: no second key, no config');

    await writeFile(join(repo, 'config'), savedConfig);
    const target = join(dir, 'target');
    const restore = quiesce('restore', 'latest', '--config', config, '--target', target);
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(await readFile(join(target, data, 'a.txt'), 'utf8'), 'the first file\n');
  });

  for (const kind of ['keys', 'data', 'index', 'manifests', 'locks'] as const) {
    test(`a location holding only ${kind} objects is refused, naming them`, async () => {
      const source = join(dir, `source-${kind}`);
      const backend = await openBackend(source, { create: true });
      await (await initRepository(backend, PASSWORD, TEST_REPOSITORY_OPTIONS)).close();
      const only = join(dir, `only-${kind}`);
      await mkdir(only, { recursive: true });
      if (kind === 'locks' || kind === 'manifests' || kind === 'index' || kind === 'data') {
        const name = randomBytes(32).toString('hex');
        const path = kind === 'data' ? join(only, 'data', name.slice(0, 2)) : join(only, kind);
        await mkdir(path, { recursive: true });
        await writeFile(join(path, name), randomBytes(100));
      } else {
        await cp(join(source, 'keys'), join(only, 'keys'), { recursive: true });
      }
      const init = quiesce('init', '--repo', only);
      assert.equal(init.code, 2, init.stderr);
      assert.match(init.stderr, new RegExp(`holds objects of a repository: [a-z ]+ \\(${kind}/[0-9a-f]{64}\\)`));
      assert.equal(
        (await filesUnder(only)).filter((f) => f.startsWith('keys/') || f === 'config').length,
        kind === 'keys' ? 1 : 0,
      );
    });
  }
});

describe('init over an S3 prefix whose config was deleted', () => {
  test('refused, nothing written, the old repository opens once its config is back', async () => {
    const server = await startS3Server('quiesce-init-existing');
    try {
      const location = `s3://${server.bucket}/repo`;
      const s3 = { endpoint: server.endpoint, credentials: server.credentials };
      const backend = await openBackend(location, { create: true, s3 });
      const repo = await initRepository(backend, PASSWORD, TEST_REPOSITORY_OPTIONS);
      await repo.saveBlob('data', randomBytes(1000));
      await repo.flush();
      await repo.close();
      const config = await backend.load('config', 'config');
      await backend.remove('config', 'config');
      const keys = async () => {
        const names: string[] = [];
        for await (const info of backend.list('keys')) names.push(info.name);
        return names;
      };
      const keysBefore = await keys();
      await assert.rejects(
        initRepository(backend, PASSWORD, TEST_REPOSITORY_OPTIONS),
        (error: Error) =>
          /s3:\/\/quiesce-init-existing\/repo has no config but holds objects of a repository: key files \(keys\//.test(
            error.message,
          ) && /packs \(data\//.test(error.message),
      );
      assert.deepEqual(await keys(), keysBefore, 'no second key');
      assert.equal(await backend.exists(), false, 'no new config');
      await backend.save('config', 'config', config);
      await (await openRepository(backend, PASSWORD)).close();
    } finally {
      await server.stop();
    }
  });
});
