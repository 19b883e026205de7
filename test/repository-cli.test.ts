// The repository through the command line, as an operator meets it: crash safety under SIGKILL,
// a flipped byte, a wrong password, a foreign or truncated repository, a full disk.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startS3Server } from './helpers/s3-server.ts';
import { writePlainConfig } from './helpers/cli.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const PASSWORD = 'a long and secret password';
let dir: string;

function quiesce(env: Record<string, string>, ...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, QUIESCE_PASSWORD: PASSWORD, ...env },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function writeConfig(name: string, paths: string[], repo: string): Promise<string> {
  return writePlainConfig(dir, name, paths, repo);
}

async function hashTree(root: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (d: string) => {
    for (const name of (await readdir(d)).sort()) {
      const p = join(d, name);
      const st = await stat(p);
      hash.update(name);
      if (st.isDirectory()) await walk(p);
      else hash.update(await readFile(p));
    }
  };
  await walk(root);
  return hash.digest('hex');
}

async function packFiles(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const fan of await readdir(join(repo, 'data')))
    for (const name of await readdir(join(repo, 'data', fan))) out.push(join(repo, 'data', fan, name));
  return out;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-repo-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('repository from the command line', () => {
  test('crash safety: 20 backups killed with SIGKILL at random moments leave the repository valid', async () => {
    const data = join(dir, 'crash-data');
    await mkdir(data, { recursive: true });
    for (let i = 0; i < 8; i++) await writeFile(join(data, `file-${i}.bin`), randomBytes(5 << 20));
    const repo = join(dir, 'crash-repo');
    const config = await writeConfig('crash', [data], repo);
    assert.equal(quiesce({}, 'init', '--config', config).code, 0);
    const first = quiesce({}, 'backup', '--config', config, '--json');
    assert.equal(first.code, 0, first.stderr);
    const firstId = (JSON.parse(first.stdout) as { id: string }).id;
    const firstHash = await hashTree(data);
    const completed: string[] = [];
    for (let i = 0; i < 20; i++) {
      // Change something each time so every run has new data to write.
      const handle = await open(join(data, `file-${i % 8}.bin`), 'r+');
      await handle.write(randomBytes(1 << 20), 0, 1 << 20, (i % 4) << 20);
      await handle.close();
      const child = spawn(process.execPath, [bin, 'backup', '--config', config, '--json'], {
        env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      const delay = 50 + Math.floor(Math.random() * 1500);
      const exited = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
        }, delay);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
      if (exited === 0) completed.push((JSON.parse(stdout) as { id: string }).id);
    }
    const check = quiesce({}, 'check', '--config', config, '--read-data', '--json');
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const report = JSON.parse(check.stdout) as { ok: boolean; problems: { kind: string }[] };
    assert.equal(report.ok, true);
    assert.ok(
      report.problems.every((p) => p.kind === 'unreferenced-pack'),
      JSON.stringify(report.problems),
    );
    // Every set still restores; the first one is exactly what was there.
    const sets = (JSON.parse(quiesce({}, 'backups', '--config', config, '--json').stdout) as { sets: { id: string }[] })
      .sets;
    // Every backup that finished is there; one killed after its manifest was stored may be too.
    for (const id of completed)
      assert.ok(
        sets.some((set) => set.id === id),
        `completed set ${id} is listed`,
      );
    assert.ok(sets.length >= 1 + completed.length && sets.length <= 21);
    for (const set of sets) {
      const target = join(dir, 'crash-restore', set.id);
      const r = quiesce({}, 'restore', set.id, '--config', config, '--target', target);
      assert.equal(r.code, 0, r.stderr);
      if (set.id === firstId) assert.equal(await hashTree(join(target, data)), firstHash);
    }
    const next = quiesce({}, 'backup', '--config', config);
    assert.equal(next.code, 0, next.stderr);
  });

  test('one flipped byte: check names the damaged chunk and its files; that file fails to restore, others restore', async () => {
    const data = join(dir, 'flip-data');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'victim.bin'), randomBytes(3 << 20));
    await writeFile(join(data, 'bystander.txt'), 'fine\n');
    const repo = join(dir, 'flip-repo');
    const config = await writeConfig('flip', [data], repo);
    assert.equal(quiesce({}, 'init', '--config', config).code, 0);
    assert.equal(quiesce({}, 'backup', '--config', config).code, 0);
    assert.equal(quiesce({}, 'check', '--config', config, '--read-data').code, 0);
    // The largest pack holds victim.bin's chunks; flip a byte in its first blob.
    const packs = await Promise.all((await packFiles(repo)).map(async (p) => ({ p, size: (await stat(p)).size })));
    const pack = packs.sort((a, b) => b.size - a.size)[0]!.p;
    const handle = await open(pack, 'r+');
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, 100);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, 100);
    await handle.close();
    const check = quiesce({}, 'check', '--config', config, '--read-data');
    assert.equal(check.code, 1);
    assert.match(check.stdout, /damaged/);
    assert.match(check.stdout, /victim\.bin/);
    const target = join(dir, 'flip-restore');
    const restored = quiesce({}, 'restore', 'latest', '--config', config, '--target', target);
    assert.equal(restored.code, 1);
    assert.match(restored.stderr, /victim\.bin/);
    assert.equal(await readFile(join(target, data, 'bystander.txt'), 'utf8'), 'fine\n');
    assert.equal(existsSync(join(target, data, 'victim.bin')), false, 'no half-written file is left');
  });

  test('bad input: wrong password, no repository, a foreign directory, a truncated config', async () => {
    const data = join(dir, 'bad-data');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'a.txt'), 'a');
    const repo = join(dir, 'bad-repo');
    const config = await writeConfig('bad', [data], repo);
    assert.equal(quiesce({}, 'init', '--config', config).code, 0);
    assert.equal(quiesce({}, 'backup', '--config', config).code, 0);
    const wrong = quiesce({ QUIESCE_PASSWORD: 'not it' }, 'backups', '--config', config);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /password/);
    // A second password opens the same repository; the first still does.
    await writeFile(join(dir, 'second-password'), 'the second one\n');
    assert.equal(
      quiesce({}, 'key', 'add', '--config', config, '--new-password-file', join(dir, 'second-password')).code,
      0,
    );
    assert.equal(quiesce({ QUIESCE_PASSWORD: 'the second one' }, 'backups', '--config', config).code, 0);
    assert.equal(quiesce({}, 'backups', '--config', config).code, 0);
    // Two keys; the second password's is removed with the first password, and no longer opens.
    const keys = JSON.parse(quiesce({}, 'key', 'list', '--config', config, '--json').stdout) as {
      id: string;
      current: boolean;
    }[];
    assert.equal(keys.length, 2);
    const mine = keys.find((k) => k.current)!;
    const other = keys.find((k) => !k.current)!;
    const own = quiesce({}, 'key', 'remove', mine.id.slice(0, 12), '--config', config);
    assert.equal(own.code, 2, 'the key of the password in use is refused');
    assert.match(own.stderr, /another password/);
    assert.equal(quiesce({}, 'key', 'remove', other.id.slice(0, 12), '--config', config).code, 0);
    assert.equal(quiesce({ QUIESCE_PASSWORD: 'the second one' }, 'backups', '--config', config).code, 2);
    assert.equal(quiesce({}, 'backups', '--config', config).code, 0);
    const none = quiesce({}, 'backups', '--repo', join(dir, 'nothing-here'));
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no quiesce repository|not a quiesce repository|quiesce init/);
    const foreign = join(dir, 'foreign');
    await mkdir(foreign, { recursive: true });
    await writeFile(join(foreign, 'config'), "this is somebody else's file");
    const f = quiesce({}, 'backups', '--repo', foreign);
    assert.equal(f.code, 2);
    assert.equal(quiesce({}, 'init', '--config', config).code === 0, false, 'init refuses an existing repository');
    const copyRepo = join(dir, 'bad-repo-truncated');
    spawnSync('cp', ['-a', repo, copyRepo]);
    await truncate(join(copyRepo, 'config'), 10);
    const t = quiesce({}, 'backups', '--repo', copyRepo);
    assert.equal(t.code, 2, t.stderr);
    // The original is untouched by all of that.
    assert.equal(quiesce({}, 'check', '--config', config, '--read-data').code, 0);
  });

  test('a full disk: a clear error, exit 1, and every earlier set intact', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('mounting a small tmpfs needs root');
      return;
    }
    const mnt = join(dir, 'tiny');
    await mkdir(mnt, { recursive: true });
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mnt]);
    if (mount.status !== 0) {
      t.skip(`cannot mount tmpfs: ${mount.stderr.toString()}`);
      return;
    }
    try {
      const data = join(dir, 'full-data');
      await mkdir(data, { recursive: true });
      await writeFile(join(data, 'small.bin'), randomBytes(1 << 20));
      const config = await writeConfig('full', [data], join(mnt, 'repo'));
      assert.equal(quiesce({}, 'init', '--config', config).code, 0);
      assert.equal(quiesce({}, 'backup', '--config', config).code, 0);
      await writeFile(join(data, 'big.bin'), randomBytes(40 << 20));
      const full = quiesce({}, 'backup', '--config', config);
      assert.equal(full.code, 1);
      assert.match(full.stdout + full.stderr, /full|no space/i);
      await rm(join(data, 'big.bin'));
      assert.equal(quiesce({}, 'check', '--config', config, '--read-data').code, 0);
      const target = join(dir, 'full-restore');
      assert.equal(quiesce({}, 'restore', 'latest', '--config', config, '--target', target).code, 0);
      assert.equal((await stat(join(target, data, 'small.bin'))).size, 1 << 20);
    } finally {
      spawnSync('umount', ['-l', mnt]);
    }
  });
});

describe('forget and prune', () => {
  test('forget keeps what the rules keep; prune frees data only after the grace period', async () => {
    const data = join(dir, 'forget-data');
    await mkdir(data, { recursive: true });
    const repo = join(dir, 'forget-repo');
    const config = await writeConfig('forget', [data], repo);
    assert.equal(quiesce({}, 'init', '--config', config).code, 0);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      await writeFile(join(data, 'payload.bin'), randomBytes(4 << 20));
      const r = quiesce({}, 'backup', '--config', config, '--json');
      assert.equal(r.code, 0, r.stderr);
      ids.push((JSON.parse(r.stdout) as { id: string }).id);
    }
    const sizeBefore = (await packFiles(repo)).length;
    assert.equal(quiesce({}, 'forget', '--config', config).code, 2, 'forget without a keep rule is refused');
    const dry = JSON.parse(
      quiesce({}, 'forget', '--config', config, '--keep-last', '1', '--dry-run', '--json').stdout,
    ) as { remove: string[] };
    assert.deepEqual(dry.remove.sort(), ids.slice(0, 2).sort());
    assert.equal(
      (JSON.parse(quiesce({}, 'backups', '--config', config, '--json').stdout) as { sets: unknown[] }).sets.length,
      3,
      'a dry run changes nothing',
    );
    // Forget two sets and prune with the default grace period: their data stays for now.
    const forgot = quiesce({}, 'forget', '--config', config, '--keep-last', '1', '--prune', '--json');
    assert.equal(forgot.code, 0, forgot.stderr);
    assert.equal(
      (JSON.parse(quiesce({}, 'backups', '--config', config, '--json').stdout) as { sets: { id: string }[] }).sets
        .map((s) => s.id)
        .join(),
      ids[2],
    );
    assert.equal((await packFiles(repo)).length, sizeBefore, 'young unreferenced data is kept for the grace period');
    // With no grace period the forgotten sets' data goes; the kept set still restores and checks.
    const pruned = quiesce({}, 'forget', '--config', config, '--keep-last', '1', '--prune', '--grace', '0', '--json');
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.ok((await packFiles(repo)).length < sizeBefore, 'unreferenced packs were removed');
    assert.equal(quiesce({}, 'check', '--config', config, '--read-data').code, 0);
    const target = join(dir, 'forget-restore');
    assert.equal(quiesce({}, 'restore', 'latest', '--config', config, '--target', target).code, 0);
    assert.equal((await stat(join(target, data, 'payload.bin'))).size, 4 << 20);
    // The operator can read what happened in the set, phase by phase.
    const shown = quiesce({}, 'show', 'latest', '--config', config, '--events');
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /commit\s+info\s+1 plain path\(s\) read in place after thaw/);
    assert.match(shown.stdout, /post-snapshot\s+end/);
    assert.match(shown.stdout, /succeeded, consistency inconsistent/);
  });
});

describe('object storage', () => {
  test('init, backup, restore and check against a real S3 server', async () => {
    const server = await startS3Server('quiesce-e2e');
    try {
      const env = {
        AWS_ENDPOINT_URL: server.endpoint,
        AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
        AWS_REGION: 'us-east-1',
      };
      const data = join(dir, 's3-data');
      await mkdir(join(data, 'sub'), { recursive: true });
      await writeFile(join(data, 'big.bin'), randomBytes(6 << 20));
      await writeFile(join(data, 'sub', 'small.txt'), 'small\n');
      const config = await writeConfig('s3', [data], `s3://${server.bucket}/backups`);
      assert.equal(quiesce(env, 'init', '--config', config).code, 0);
      const backup = quiesce(env, 'backup', '--config', config);
      assert.equal(backup.code, 0, backup.stderr);
      const again = quiesce(env, 'backup', '--config', config, '--type', 'incremental', '--json');
      assert.equal(again.code, 0, again.stderr);
      assert.ok(
        (JSON.parse(again.stdout) as { stats: { bytesAdded: number } }).stats.bytesAdded < 64 << 10,
        'the second backup deduplicates',
      );
      const target = join(dir, 's3-restore');
      assert.equal(quiesce(env, 'restore', 'latest', '--config', config, '--target', target).code, 0);
      assert.equal(await hashTree(join(target, data)), await hashTree(data));
      assert.equal(quiesce(env, 'check', '--config', config, '--read-data').code, 0);
    } finally {
      await server.stop();
    }
  });
});
