// A restore from a repository with a damaged pack, through the command line: a pack truncated,
// one emptied, one deleted, in turn. Every file of the good packs comes back equal to its
// original, every file that used the damaged pack is named and not left behind, no temporary
// file stays in the target, exit 1, no stack trace.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { restore } from '../src/backup/index.ts';
import { FsBackend } from '../src/repository/backend/index.ts';
import { loadAllIndexes } from '../src/repository/index-file.ts';
import { openRepository, type Repository } from '../src/repository/index.ts';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const PASSWORD = 'a long and secret password';
let dir: string;
let data: string;
let repo: string;
let config: string;
/** Original path -> sha256 of its content. */
const originals = new Map<string, string>();
/** Original path -> the packs its blobs lie in, with where. */
const blobsOf = new Map<string, { pack: string; offset: number; length: number }[]>();
/** Data pack -> its file in the repository. */
const packFiles = new Map<string, string>();

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Every path below `root`, relative. */
async function listAll(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { recursive: true })) out.push(String(entry));
  return out;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-restore-damage-'));
  data = join(dir, 'data');
  repo = join(dir, 'repo');
  // Small files (read ahead, several blobs per ranged load) and large ones (many blobs each, opened on workers).
  await mkdir(join(data, 'small'), { recursive: true });
  await mkdir(join(data, 'large'), { recursive: true });
  for (let i = 0; i < 300; i++) {
    const bytes = randomBytes(500 + ((i * 7919) % 20_000));
    const path = join(data, 'small', `s${String(i).padStart(3, '0')}`);
    await writeFile(path, bytes);
    originals.set(path, sha(bytes));
  }
  for (let i = 0; i < 9; i++) {
    const bytes = randomBytes(6 << 20);
    const path = join(data, 'large', `l${i}`);
    await writeFile(path, bytes);
    originals.set(path, sha(bytes));
  }
  config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${repo}`,
      `stateDir: ${join(dir, 'state')}`,
      `stagingDir: ${join(dir, 'staging')}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  assert.equal(quiesce('init', '--config', config).code, 0);
  const backup = quiesce('backup', '--config', config);
  assert.equal(backup.code, 0, backup.stderr);

  // Where each file's blobs are, from the index.
  const backend = new FsBackend(repo);
  const repository: Repository = await openRepository(backend, PASSWORD, { workers: 0 });
  try {
    const { keys } = repository as unknown as { keys: { encryption: Buffer } };
    const where = new Map<string, { pack: string; offset: number; length: number }>();
    for (const { file } of (await loadAllIndexes(backend, keys.encryption)).files)
      for (const pack of file.packs)
        for (const blob of pack.blobs) where.set(blob.id, { pack: pack.id, offset: blob.offset, length: blob.length });
    const [manifest] = await repository.listManifests();
    const walk = async (tree: string, at: string) => {
      for (const node of (await repository.loadTree(tree)).nodes) {
        if (node.type === 'dir') await walk(node.subtree, `${at}/${node.name}`);
        else if (node.type === 'file') {
          blobsOf.set(
            `${at}/${node.name}`,
            node.content.map((c) => where.get(c.id)!),
          );
        }
      }
    };
    await walk((await repository.loadManifest(manifest!)).tree, '');
  } finally {
    await repository.close();
  }
  for (const fan of await readdir(join(repo, 'data')))
    for (const name of await readdir(join(repo, 'data', fan))) packFiles.set(name, join(repo, 'data', fan, name));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The data packs, with how many small-file and large-file blobs each holds. */
function dataPacks(): { pack: string; small: number; large: number }[] {
  const counts = new Map<string, { pack: string; small: number; large: number }>();
  for (const [path, blobs] of blobsOf) {
    for (const blob of blobs) {
      const entry = counts.get(blob.pack) ?? { pack: blob.pack, small: 0, large: 0 };
      if (path.includes('/small/')) entry.small++;
      else entry.large++;
      counts.set(blob.pack, entry);
    }
  }
  return [...counts.values()];
}

/**
 * Damages one pack, restores, checks the outcome, and puts the pack back. `lost` tells which
 * blobs of that pack are gone.
 */
async function restoreWith(
  pack: string,
  damage: (file: string) => Promise<void>,
  lost: (blob: { offset: number; length: number }) => boolean,
  label: string,
  json = false,
): Promise<void> {
  const file = packFiles.get(pack)!;
  const saved = await readFile(file);
  await damage(file);
  try {
    const damaged = new Set(
      [...blobsOf].filter(([, blobs]) => blobs.some((b) => b.pack === pack && lost(b))).map(([path]) => path),
    );
    assert.ok(damaged.size > 0 && damaged.size < originals.size, `${label}: ${damaged.size} files use what is lost`);
    const target = join(dir, `target-${label}`);
    const run = quiesce('restore', 'latest', '--config', config, '--target', target, ...(json ? ['--json'] : []));
    assert.equal(run.code, 1, `${label}: ${run.stderr}`);
    assert.doesNotMatch(run.stderr, /^\s+at /m, `${label}: no stack trace`);
    assert.doesNotMatch(run.stderr, /BackendError/, label);
    const named = json
      ? new Set((JSON.parse(run.stdout) as { failed: { path: string }[] }).failed.map((f) => f.path))
      : new Set([...run.stderr.matchAll(/could not restore (\S+):/g)].map((m) => m[1]!));
    assert.deepEqual([...named].sort(), [...damaged].sort(), `${label}: exactly the damaged files are named`);
    for (const [path, digest] of originals) {
      const restored = join(target, path);
      if (damaged.has(path)) assert.equal(existsSync(restored), false, `${label}: ${path} is not left half-written`);
      else assert.equal(sha(await readFile(restored)), digest, `${label}: ${path} restored equal`);
    }
    const temps = (await listAll(target)).filter((p) => p.includes('.quiesce-restore-'));
    assert.deepEqual(temps, [], `${label}: no temporary file is left`);
    await rm(target, { recursive: true, force: true });
  } finally {
    await chmod(file, 0o600).catch(() => undefined);
    await writeFile(file, saved);
  }
}

describe('restore from a damaged pack', () => {
  test('a truncated pack: the files whose blobs were cut off are named, every other file restores', async () => {
    // The pack with the most small files: blobs read ahead together, some before the cut, some after.
    // Cut through the middle of its small files' blobs: a run read as one range then reaches past
    // the end, and the blobs of that run before the cut must still restore.
    const pack = dataPacks().sort((a, b) => b.small - a.small)[0]!.pack;
    const small = [...blobsOf]
      .filter(([path]) => path.includes('/small/'))
      .flatMap(([, blobs]) => blobs)
      .filter((b) => b.pack === pack)
      .sort((a, b) => a.offset - b.offset);
    const middle = small[Math.floor(small.length / 2)]!;
    const cut = middle.offset + Math.floor(middle.length / 2);
    await restoreWith(
      pack,
      (file) => truncate(file, cut),
      (b) => b.offset + b.length > cut,
      'truncated',
    );
  });

  test('an emptied pack: its files are named (in --json too), every other file restores', async () => {
    const pack = dataPacks().sort((a, b) => b.large - a.large)[0]!.pack;
    await restoreWith(
      pack,
      (file) => truncate(file, 0),
      () => true,
      'emptied',
      true,
    );
  });

  test('an error that stops a restore stops it whole: no temporary file is left once it has thrown', async () => {
    const repository = await openRepository(new FsBackend(repo), PASSWORD);
    try {
      const tree = (await repository.loadManifest((await repository.listManifests())[0]!)).tree;
      const interrupt = new AbortController();
      const target = join(dir, 'target-interrupted');
      // Aborted as the first file is done, while the other walkers are writing large files.
      const restoring = restore({
        repository,
        tree,
        target,
        signal: interrupt.signal,
        onProgress: () => interrupt.abort(new Error('interrupted')),
      });
      await assert.rejects(restoring, /interrupted/);
      const temps = (await listAll(target)).filter((p) => p.includes('.quiesce-restore-'));
      assert.deepEqual(temps, [], 'no temporary file is left');
      await rm(target, { recursive: true, force: true });
    } finally {
      await repository.close();
    }
  });

  test('a deleted pack: its files are named, every other file restores', async () => {
    const packs = dataPacks().sort((a, b) => b.large - a.large);
    assert.ok(packs.length >= 3, `the set spans ${packs.length} data packs`);
    await restoreWith(
      packs[1]!.pack,
      (file) => unlink(file),
      () => true,
      'deleted',
    );
  });
});
