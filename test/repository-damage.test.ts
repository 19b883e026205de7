// The damage matrix (issue 19, "Done when"): every object kind of a repository (config, key,
// index, data pack, manifest, lock, tree pack) damaged six ways (emptied, cut in half, one byte
// flipped, garbage of the same length, removed, replaced by another object of its kind), then
// the commands a user runs (check, check --read-data, backups, restore, backup). Every outcome
// is correct, or a clear error naming the object, exit 1 or 2; never a stack trace or a hang.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FsBackend, openRepository } from '../src/repository/index.ts';
import { loadAllIndexes } from '../src/repository/index-file.ts';

const bin = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));
const PASSWORD = 'a long and secret password';
const TIMEOUT_MS = 60_000;
let dir: string;
let data: string;
/** The two versions of the data (the first and the second set), each file's bytes. */
const versions: Map<string, Buffer>[] = [];

type Kind = 'config' | 'key' | 'index' | 'pack' | 'manifest' | 'lock' | 'tree pack';
type Damage = 'emptied' | 'cut in half' | 'byte flipped' | 'garbage' | 'removed' | 'replaced';
const KINDS: Kind[] = ['config', 'key', 'index', 'pack', 'manifest', 'lock', 'tree pack'];
const DAMAGES: Damage[] = ['emptied', 'cut in half', 'byte flipped', 'garbage', 'removed', 'replaced'];
const COMMANDS = ['check', 'check --read-data', 'backups', 'restore', 'backup'] as const;
type CommandName = (typeof COMMANDS)[number];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  hung: boolean;
}

function quiesce(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, QUIESCE_PASSWORD: PASSWORD },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, hung });
    });
  });
}

async function configFor(name: string, repo: string): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `repository: ${repo}`,
      `stateDir: ${join(dir, `${name}-state`)}`,
      `stagingDir: ${join(dir, `${name}-staging`)}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  return file;
}

async function snapshotData(): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const name of await readdir(data, { recursive: true })) {
    const path = join(data, name);
    if ((await stat(path)).isFile()) files.set(name, await readFile(path));
  }
  return files;
}

/** The objects of each kind to damage in the base repository, and one other object of that kind. */
interface Targets {
  path: Record<Kind, string>;
  other: Record<Kind, string>;
  id: Record<Kind, string>;
  /** The names that identify the object in a message: its own, and for a pack the blobs it holds. */
  names: Record<Kind, string[]>;
}

async function findTargets(repo: string, otherRepo: string): Promise<Targets> {
  const repository = await openRepository(new FsBackend(repo), PASSWORD, { workers: 0 });
  const keys = (repository as unknown as { keys: { encryption: Buffer } }).keys;
  const { files } = await loadAllIndexes(new FsBackend(repo), keys.encryption);
  const manifests = await repository.listManifests();
  const envelopes = await Promise.all(manifests.map(async (id) => ({ id, m: await repository.loadManifest(id) })));
  envelopes.sort((a, b) => a.m.time.localeCompare(b.m.time));
  const latest = envelopes.at(-1)!;
  const lock = await repository.lock('shared');
  const lockName = (await readdir(join(repo, 'locks')))[0]!;
  const lockBytes = await readFile(join(repo, 'locks', lockName));
  const otherLock = await repository.lock('shared');
  const otherLockName = (await readdir(join(repo, 'locks'))).find((n) => n !== lockName)!;
  const otherLockBytes = await readFile(join(repo, 'locks', otherLockName));
  await otherLock.release();
  await lock.release();
  await repository.close();
  // A lock a killed run left behind (stale: its pid is gone), and another to replace it with.
  await mkdir(join(repo, 'locks'), { recursive: true });
  await writeFile(join(repo, 'locks', lockName), lockBytes);
  await writeFile(join(dir, 'other-lock'), otherLockBytes);

  const packs = files.flatMap((f) => f.file.packs);
  const treePack = packs.find((p) => p.blobs.some((b) => b.id === latest.m.tree))!;
  const dataPack = packs.find((p) => p.blobs.every((b) => b.type === 'data') && p.blobs.length > 1)!;
  const otherData = packs.find((p) => p.id !== dataPack.id && p.blobs.every((b) => b.type === 'data'))!;
  const otherTree = packs.find((p) => p.id !== treePack.id && p.blobs.every((b) => b.type === 'tree'))!;
  const index = files.find((f) => f.file.packs.some((p) => p.id === dataPack.id))!.name;
  const otherIndex = files.find((f) => f.name !== index)!.name;
  const key = (await readdir(join(repo, 'keys')))[0]!;
  const otherKey = (await readdir(join(otherRepo, 'keys')))[0]!;
  const packPath = (id: string) => join('data', id.slice(0, 2), id);
  const id = {
    config: 'config',
    key,
    index,
    pack: dataPack.id,
    manifest: latest.id,
    lock: lockName,
    'tree pack': treePack.id,
  };
  return {
    names: {
      ...Object.fromEntries(Object.entries(id).map(([k, v]) => [k, [v]])),
      pack: [dataPack.id, ...dataPack.blobs.map((b) => b.id)],
      'tree pack': [treePack.id, ...treePack.blobs.map((b) => b.id)],
    } as Record<Kind, string[]>,
    id: {
      config: 'config',
      key,
      index,
      pack: dataPack.id,
      manifest: latest.id,
      lock: lockName,
      'tree pack': treePack.id,
    },
    path: {
      config: join(repo, 'config'),
      key: join(repo, 'keys', key),
      index: join(repo, 'index', index),
      pack: join(repo, packPath(dataPack.id)),
      manifest: join(repo, 'manifests', latest.id),
      lock: join(repo, 'locks', lockName),
      'tree pack': join(repo, packPath(treePack.id)),
    },
    other: {
      config: join(otherRepo, 'config'),
      key: join(otherRepo, 'keys', otherKey),
      index: join(repo, 'index', otherIndex),
      pack: join(repo, packPath(otherData.id)),
      manifest: join(repo, 'manifests', envelopes[0]!.id),
      lock: join(dir, 'other-lock'),
      'tree pack': join(repo, packPath(otherTree.id)),
    },
  };
}

async function damage(file: string, how: Damage, other: Buffer): Promise<void> {
  const bytes = await readFile(file);
  switch (how) {
    case 'emptied':
      return writeFile(file, Buffer.alloc(0));
    case 'cut in half':
      return writeFile(file, bytes.subarray(0, bytes.length >> 1));
    case 'byte flipped':
      bytes[bytes.length >> 1]! ^= 0x01;
      return writeFile(file, bytes);
    case 'garbage':
      return writeFile(file, randomBytes(bytes.length));
    case 'removed':
      return rm(file);
    case 'replaced':
      return writeFile(file, other);
  }
}

/** The words that name an object of each kind in a message. */
const KIND_WORDS: Record<Kind, RegExp> = {
  config: /\bconfig\b/,
  key: /\bkeys?\b/,
  index: /\bindex\b/,
  pack: /\bpack\b|\bblob\b/,
  manifest: /\bmanifest\b/,
  lock: /\block\b/,
  'tree pack': /\btree\b|\bpack\b|\bblob\b/,
};

type Outcome = 'correct' | 'named error' | 'unnamed error' | 'wrong' | 'stack trace' | 'hang';

async function restoredMatches(target: string): Promise<boolean> {
  for (const version of versions) {
    let same = true;
    for (const [name, bytes] of version) {
      const got = await readFile(join(target, data, name)).catch(() => null);
      if (got === null || !got.equals(bytes)) {
        same = false;
        break;
      }
    }
    if (same) return true;
  }
  return false;
}

async function judge(
  kind: Kind,
  how: Damage,
  names: readonly string[],
  command: CommandName,
  run: Run,
  target: string,
): Promise<Outcome> {
  const output = `${run.stdout}\n${run.stderr}`;
  if (run.hung) return 'hang';
  if (/^\s+at /m.test(run.stderr) || /^quiesce: [A-Za-z]*Error: /m.test(run.stderr)) return 'stack trace';
  if (run.code === 0) {
    if (command === 'restore') return (await restoredMatches(target)) ? 'correct' : 'wrong';
    if (command === 'check --read-data' && kind !== 'lock' && kind !== 'manifest') {
      // Only a lock (nobody's data) or a removed or replaced manifest (a forgotten set) leaves a repository that checks clean.
      return 'wrong';
    }
    return 'correct';
  }
  if (run.code !== 1 && run.code !== 2 && run.code !== 3) return 'unnamed error';
  // Named: by its id (or a blob a pack holds); a removed object, which no listing shows, by its kind.
  const named = names.some((name) => output.includes(name)) || (how === 'removed' && KIND_WORDS[kind].test(output));
  return named ? 'named error' : 'unnamed error';
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-damage-'));
  data = join(dir, 'data');
  await mkdir(join(data, 'sub'), { recursive: true });
  await writeFile(join(data, 'big.bin'), randomBytes(3 << 20));
  for (let i = 0; i < 5; i++) await writeFile(join(data, 'sub', `small-${i}.txt`), `small file ${i}\n`.repeat(50));
  const base = join(dir, 'base');
  const config = await configFor('base', base);
  assert.equal((await quiesce(['init', '--config', config])).code, 0);
  assert.equal((await quiesce(['backup', '--config', config])).code, 0);
  versions.push(await snapshotData());
  await writeFile(join(data, 'sub', 'small-0.txt'), 'changed\n');
  await writeFile(join(data, 'new.bin'), randomBytes(200_000));
  assert.equal((await quiesce(['backup', '--config', config])).code, 0);
  versions.push(await snapshotData());
  const other = join(dir, 'other');
  assert.equal((await quiesce(['init', '--repo', other])).code, 0);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('every object kind damaged six ways', () => {
  test('every outcome is correct or a clear error naming the object; no stack trace, no hang', async (t) => {
    const base = join(dir, 'base');
    const targets = await findTargets(base, join(dir, 'other'));
    const counts = new Map<Outcome, number>();
    const bad: string[] = [];
    let cases = 0;
    for (const kind of KINDS) {
      for (const how of DAMAGES) {
        cases += 1;
        const name = `${kind}-${how}`.replace(/ /g, '_');
        const repo = join(dir, `case-${name}`);
        await cp(base, repo, { recursive: true });
        const rel = targets.path[kind].slice(base.length + 1);
        const other = await readFile(targets.other[kind].replace(`${base}/`, `${repo}/`));
        await damage(join(repo, rel), how, other);
        const config = await configFor(name, repo);
        for (const command of COMMANDS) {
          const target = join(dir, `restore-${name}`);
          const args =
            command === 'restore'
              ? ['restore', 'latest', '--config', config, '--target', target]
              : [...command.split(' '), '--config', config];
          const run = await quiesce(args);
          const outcome = await judge(kind, how, targets.names[kind], command, run, target);
          counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
          if (outcome !== 'correct' && outcome !== 'named error')
            bad.push(
              `${kind}, ${how}, ${command}: ${outcome} (exit ${run.code}): ${(run.stderr || run.stdout).slice(0, 600)}`,
            );
        }
        await rm(repo, { recursive: true, force: true });
        await rm(join(dir, `restore-${name}`), { recursive: true, force: true });
      }
    }
    t.diagnostic(`${cases} damaged repositories, ${cases * COMMANDS.length} commands`);
    t.diagnostic(`outcomes: ${[...counts].map(([o, n]) => `${o} ${n}`).join(', ')}`);
    assert.deepEqual(bad, [], bad.join('\n\n'));
  });
});
