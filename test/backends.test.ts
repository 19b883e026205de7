// The repository backends: the contract suite on a local directory and on a real S3 server
// (s3rver on loopback), then what only one of them has: a full disk, leftovers of a killed
// writer, the S3 key layout and configuration, retry over a real network failure, openBackend.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import {
  BackendError,
  FsBackend,
  MemoryBackend,
  RetryBackend,
  S3Backend,
  isTransient,
  openBackend,
  type RetryEvent,
} from '../src/repository/backend/index.ts';
import { isNotFound, isPlainBackendError, listNames, randomName, runBackendContract } from './backend-contract.ts';
import { startS3Server, type S3Server } from './helpers/s3-server.ts';

const execFileAsync = promisify(execFile);
const scratch = await mkdtemp(join(tmpdir(), 'quiesce-backends-'));
after(() => rm(scratch, { recursive: true, force: true }));

async function freshDir(label: string): Promise<string> {
  return mkdtemp(join(scratch, `${label}-`));
}

// ---------------------------------------------------------------------------------------------
// FsBackend

runBackendContract(
  'fs',
  async () => {
    const dir = await freshDir('contract');
    return {
      backend: await FsBackend.create(join(dir, 'repo')),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  },
  // Pagination is S3's concern; a few hundred files prove the fan-out listing without 1100 fsyncs.
  { manyObjects: 300 },
);

// ---------------------------------------------------------------------------------------------
// MemoryBackend: the fake the repository's unit tests run on keeps the same contract.

runBackendContract('memory', async () => ({
  backend: new MemoryBackend('memory:contract', { saveTakesATurn: true }),
  cleanup: async () => {},
}));

describe('FsBackend on disk', () => {
  test('create makes the layout with mode 0700, and saves fan data out by the first two hex digits', async () => {
    const root = join(await freshDir('layout'), 'repo');
    const backend = await FsBackend.create(root);
    assert.equal(backend.location, root);
    assert.deepEqual((await readdir(root)).sort(), ['data', 'index', 'keys', 'locks', 'manifests']);
    assert.equal((await stat(root)).mode & 0o777, 0o700);
    for (const dir of await readdir(root)) assert.equal((await stat(join(root, dir))).mode & 0o777, 0o700, dir);

    const name = randomName();
    await backend.save('data', name, Buffer.from('chunk'));
    await backend.save('config', 'config', Buffer.from('{}'));
    await backend.save('locks', name, Buffer.from('lock'));
    assert.deepEqual(await readdir(join(root, 'data')), [name.slice(0, 2)]);
    assert.deepEqual(await readdir(join(root, 'data', name.slice(0, 2))), [name]);
    assert.deepEqual(await readdir(join(root, 'locks')), [name], 'no temp file is left after a save');
    assert.ok((await stat(join(root, 'config'))).isFile());
    assert.equal(await new FsBackend(root).exists(), true);
  });

  test('create refuses a directory that holds something else, and accepts a repository again', async () => {
    const dir = await freshDir('create');
    const foreign = join(dir, 'photos');
    await mkdir(foreign);
    await writeFile(join(foreign, 'cat.jpg'), 'meow');
    await assert.rejects(FsBackend.create(foreign), (error: unknown) => {
      assert.ok(error instanceof BackendError);
      assert.match(error.message, /not empty and is not a quiesce repository/);
      assert.match(error.message, /cat\.jpg/);
      return true;
    });
    assert.deepEqual(await readdir(foreign), ['cat.jpg'], 'nothing was added to it');

    const repo = join(dir, 'repo');
    const first = await FsBackend.create(repo);
    await first.save('config', 'config', Buffer.from('{}'));
    const again = await FsBackend.create(repo);
    assert.equal(await again.exists(), true);

    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    await assert.rejects(FsBackend.create(file), /not a directory/);
    assert.equal(await new FsBackend(join(dir, 'nowhere')).exists(), false);
  });

  test('temp files (a writer killed mid-save, or left by hand) are never listed', async (t) => {
    const root = join(await freshDir('killed'), 'repo');
    const backend = await FsBackend.create(root);
    const kept = randomName();
    await backend.save('index', kept, Buffer.from('complete'));

    // A real writer, killed with SIGKILL as soon as its temp file appears.
    const victim = randomName();
    const moduleUrl = pathToFileURL(join(import.meta.dirname, '../src/repository/backend/fs-backend.ts')).href;
    const script = `import { FsBackend } from ${JSON.stringify(moduleUrl)};
      await new FsBackend(${JSON.stringify(root)}).save('index', ${JSON.stringify(victim)}, new Uint8Array(64 << 20).fill(7));`;
    const sawTemp = new Promise<void>((resolve) => {
      const watcher = watch(join(root, 'index'), (_event, file) => {
        if (file?.startsWith('.tmp-') === true) {
          watcher.close();
          resolve();
        }
      });
    });
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: 'ignore',
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    await Promise.race([sawTemp, exited]);
    child.kill('SIGKILL');
    const signal = await exited;
    const leftovers = (await readdir(join(root, 'index'))).filter((f) => f.startsWith('.tmp-'));
    if (signal === 'SIGKILL' && leftovers.length > 0) {
      t.diagnostic(`killed the writer with ${leftovers[0]} half written`);
      await assert.rejects(backend.load('index', victim), isNotFound, 'the killed save left no object');
    } else {
      t.diagnostic('the writer finished before the kill; checking hand-made leftovers only');
    }

    // Leftovers by hand, in a fan-out folder and at the top of a namespace.
    const dataName = randomName();
    await backend.save('data', dataName, Buffer.from('real'));
    await writeFile(join(root, 'data', dataName.slice(0, 2), '.tmp-0123456789abcdef'), 'torn');
    await writeFile(join(root, 'keys', '.tmp-feedfacecafebeef'), 'torn');
    await writeFile(join(root, 'keys', 'README'), 'not an object');
    await mkdir(join(root, 'data', 'zz'));
    await writeFile(join(root, 'data', 'zz', randomName()), 'not in its fan-out folder');

    assert.deepEqual(await listNames(backend, 'index'), [kept]);
    assert.deepEqual(await listNames(backend, 'data'), [dataName]);
    assert.deepEqual(await listNames(backend, 'keys'), []);
  });
});

describe('FsBackend on a full file system', () => {
  let mountPoint: string | undefined;
  let skip: string | undefined;
  before(async () => {
    if (process.getuid?.() !== 0) {
      skip = 'mounting a 1 MiB tmpfs needs root';
      return;
    }
    const dir = await freshDir('full');
    try {
      await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir]);
      mountPoint = dir;
      process.once('exit', unmountOnExit);
    } catch (error) {
      skip = `cannot mount a tmpfs: ${error instanceof Error ? error.message : String(error)}`;
    }
  });
  // If the run dies before `after`, the tmpfs must not stay mounted.
  const unmountOnExit = (): void => {
    if (mountPoint !== undefined) spawnSync('umount', ['-l', mountPoint], { stdio: 'ignore' });
  };
  after(async () => {
    process.removeListener('exit', unmountOnExit);
    if (mountPoint !== undefined) await execFileAsync('umount', ['-l', mountPoint]);
  });

  test('a save that does not fit fails with noSpace, says so plainly, and loses nothing', async (t) => {
    if (mountPoint === undefined) {
      t.skip(skip);
      return;
    }
    const backend = await FsBackend.create(join(mountPoint, 'repo'));
    const small = randomName();
    const smallData = randomBytes(100_000);
    await backend.save('data', small, smallData);
    const big = randomName();
    const error = await backend.save('data', big, randomBytes(2 << 20)).then(
      () => assert.fail('a 2 MiB save fitted on a 1 MiB file system'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof BackendError, String(error));
    assert.equal(error.kind, 'no-space');
    assert.match(error.message, /disk is full/);
    assert.match(error.message, /Nothing saved before was lost/);
    t.diagnostic(error.message);

    assert.ok((await backend.load('data', small)).equals(smallData), 'the earlier object is intact');
    await assert.rejects(backend.stat('data', big), isNotFound);
    for (const dir of await readdir(join(mountPoint, 'repo', 'data'))) {
      assert.deepEqual(
        (await readdir(join(mountPoint, 'repo', 'data', dir))).filter((f) => f.startsWith('.tmp-')),
        [],
        'no temp file left',
      );
    }
    const after = randomName();
    await backend.save('index', after, randomBytes(200_000));
    assert.equal((await backend.stat('index', after)).size, 200_000, 'the space of the failed save was given back');
  });
});

// ---------------------------------------------------------------------------------------------
// S3Backend against s3rver

let server: S3Server;
before(async () => {
  server = await startS3Server();
});
after(() => server?.stop());

const fastRetry = { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 20 };

runBackendContract(
  's3 (s3rver, through openBackend and RetryBackend)',
  async () => {
    const backend = await openBackend(`s3://${server.bucket}/contract-${randomBytes(6).toString('hex')}`, {
      s3: { endpoint: server.endpoint, credentials: server.credentials },
      retry: fastRetry,
    });
    return { backend, cleanup: async () => {} };
  },
  {
    tornOnCancel:
      's3rver writes an upload straight to its final file, so a PutObject cut off mid-body leaves a torn object there (S3 itself discards it)',
    cancelledSaveMayLand: true,
  },
);

function s3Options(): { endpoint: string; credentials: S3Server['credentials'] } {
  return { endpoint: server.endpoint, credentials: server.credentials };
}

describe('S3Backend', () => {
  test('uses the fs key layout under its prefix, and prefixes do not see each other', async () => {
    const prefix = `layout-${randomBytes(4).toString('hex')}/nested`;
    const backend = new S3Backend(`s3://${server.bucket}/${prefix}/`, s3Options());
    const other = new S3Backend(`s3://${server.bucket}/${prefix}-other`, s3Options());
    try {
      assert.equal(backend.location, `s3://${server.bucket}/${prefix}`);
      const name = randomName();
      await backend.save('config', 'config', Buffer.from('{}'));
      await backend.save('data', name, Buffer.from('d'));
      await backend.save('keys', name, Buffer.from('k'));
      const client = new S3Client({
        endpoint: server.endpoint,
        credentials: server.credentials,
        region: 'us-east-1',
        forcePathStyle: true,
      });
      try {
        const listed = await client.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: `${prefix}/` }));
        assert.deepEqual((listed.Contents ?? []).map((o) => o.Key).sort(), [
          `${prefix}/config`,
          `${prefix}/data/${name.slice(0, 2)}/${name}`,
          `${prefix}/keys/${name}`,
        ]);
      } finally {
        client.destroy();
      }
      assert.equal(await other.exists(), false);
      assert.deepEqual(await listNames(other, 'data'), []);
    } finally {
      await backend.close();
      await other.close();
    }
  });

  test('lists across many pages when the page size is small', async () => {
    const backend = new S3Backend(`s3://${server.bucket}/pages-${randomBytes(4).toString('hex')}`, {
      ...s3Options(),
      listPageSize: 7,
    });
    try {
      const names = Array.from({ length: 45 }, () => randomName());
      await Promise.all(names.map((n) => backend.save('data', n, Buffer.from(n))));
      assert.deepEqual(await listNames(backend, 'data'), names.sort());
    } finally {
      await backend.close();
    }
  });

  test('takes its endpoint, region and credentials from the AWS_* environment', async () => {
    const env = {
      AWS_ENDPOINT_URL: server.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
    };
    const backend = new S3Backend(`s3://${server.bucket}/env-${randomBytes(4).toString('hex')}`, { env });
    try {
      await backend.save('config', 'config', Buffer.from('env'));
      assert.equal((await backend.load('config', 'config')).toString(), 'env');
    } finally {
      await backend.close();
    }
    // s3rver does not check V4 signatures, so a wrong secret goes unnoticed there; a wrong key id does not.
    const wrong = new S3Backend(`s3://${server.bucket}/env`, { env: { ...env, AWS_ACCESS_KEY_ID: 'NOT-A-KEY' } });
    try {
      await assert.rejects(
        wrong.save('config', 'config', Buffer.from('x')),
        (error: unknown) => isPlainBackendError(error) && !isTransient(error),
      );
    } finally {
      await wrong.close();
    }
  });
});

describe('S3Backend failures', () => {
  test('a missing bucket is a clear, permanent error', async () => {
    const backend = new S3Backend('s3://no-such-bucket/p', s3Options());
    try {
      await assert.rejects(backend.save('config', 'config', Buffer.from('x')), (error: unknown) => {
        assert.ok(isPlainBackendError(error), String(error));
        assert.match((error as Error).message, /bucket no-such-bucket does not exist/);
        assert.equal(isTransient(error), false);
        return true;
      });
    } finally {
      await backend.close();
    }
  });

  test('bad locations are refused', () => {
    for (const location of ['s3://', 's3:///prefix', 's3://Bad_Bucket/p', 's3://b/../x', 's3://bucket/a//b']) {
      assert.throws(() => new S3Backend(location), BackendError, location);
    }
  });

  test('RetryBackend retries a refused connection with backoff, then gives up saying so', async () => {
    const port = await freePort();
    const events: RetryEvent[] = [];
    const backend = new RetryBackend(
      new S3Backend(`s3://${server.bucket}/p`, {
        endpoint: `http://127.0.0.1:${port}`,
        credentials: server.credentials,
      }),
      { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 10, onRetry: (event) => events.push(event) },
    );
    try {
      await assert.rejects(backend.load('index', randomName()), (error: unknown) => {
        assert.ok(isPlainBackendError(error), String(error));
        assert.match((error as Error).message, /gave up after 3 attempts/);
        return true;
      });
      assert.deepEqual(
        events.map((e) => [e.operation, e.attempt]),
        [
          ['load', 1],
          ['load', 2],
        ],
      );
      assert.ok(isTransient(events[0]?.error), 'a refused connection is transient');
    } finally {
      await backend.close();
    }
  });
});

describe('openBackend', () => {
  test('a path or file: URL is a directory, s3:// a retried S3 backend, anything else is refused', async () => {
    const dir = await freshDir('open');
    const repo = join(dir, 'repo');
    const created = await openBackend(repo, { create: true });
    assert.ok(created instanceof FsBackend);
    assert.equal(created.location, repo);
    assert.deepEqual((await readdir(repo)).sort(), ['data', 'index', 'keys', 'locks', 'manifests']);
    const byUrl = await openBackend(pathToFileURL(repo).href);
    assert.ok(byUrl instanceof FsBackend);
    assert.equal(byUrl.location, repo);

    const s3 = await openBackend('s3://bucket/prefix', {
      s3: { endpoint: 'http://127.0.0.1:1', credentials: server.credentials },
    });
    assert.ok(s3 instanceof RetryBackend);
    assert.ok(s3.inner instanceof S3Backend);
    assert.equal(s3.location, 's3://bucket/prefix');
    await s3.close();

    await assert.rejects(openBackend('sftp://host/path'), /unsupported repository location/);
    await assert.rejects(openBackend(''), BackendError);
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}
