// The tests every snapshot provider must pass (STYLE.md: one contract suite per plug-in kind).
import { test, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmod,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join, relative } from 'node:path';
import {
  QuiesceError,
  type Provider,
  type ProviderSnapshot,
  type ProviderSnapshotRequest,
} from '../src/model/index.ts';
import { findMount } from '../src/providers/mounts.ts';

/** What a tree looks like, per entry: enough to prove a snapshot equals the original byte for byte. */
interface Entry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  size?: number;
  sha256?: string;
  nlink?: number;
  target?: string;
}

interface Shot {
  entries: Entry[];
  mtimes: Map<string, number>;
}

const ODD_NAMES = [
  'with space',
  'tab\there',
  'new\nline',
  'ünïcødé-名前.txt',
  '-leading-dash',
  `quote'"`,
  '.hidden',
  '#hash',
  'x'.repeat(200),
];

export function runProviderContract(name: string, make: () => Provider, rootDir: string, stagingDir: string): void {
  describe(`${name} provider contract`, () => {
    const suite: ContractSuite = {
      make,
      name,
      rootDir,
      stagingDir,
      fresh: async (label) => {
        const dir = join(rootDir, `${name}-${label}-${randomBytes(4).toString('hex')}`);
        await mkdir(dir);
        return dir;
      },
      request: (label, paths) => ({
        setId: `${name}-${label}-${randomBytes(4).toString('hex')}`,
        paths,
        stagingDir,
      }),
    };

    test('captures a tree and a single file as they were at commit, whatever happens to them later', (t) =>
      capturesAsAtCommit(suite, t));

    test('captures nested and sibling paths, each at its own snapshot path', () => capturesNestedAndSiblings(suite));

    test('omits originals that do not exist', () => omitsMissingOriginals(suite));

    test('an aborted signal fails with provider-failed and leaves nothing behind', () => abortLeavesNothing(suite));

    test('release removes the snapshot, is idempotent and works from a serialised handle', () =>
      releaseIsIdempotent(suite));

    test('preserves modes and modification times', () => preservesModesAndTimes(suite));
  });
}

/** What every test of one provider's contract gets: the provider's maker, and fresh paths and requests. */
interface ContractSuite {
  make: () => Provider;
  name: string;
  rootDir: string;
  stagingDir: string;
  /** A new empty directory under rootDir. */
  fresh: (label: string) => Promise<string>;
  /** A request with a new set id. */
  request: (label: string, paths: string[]) => ProviderSnapshotRequest;
}

async function capturesAsAtCommit(suite: ContractSuite, t: TestContext): Promise<void> {
  const { make, fresh, request, name } = suite;
  const dir = await fresh('tree');
  const tree = join(dir, 'data');
  const single = join(dir, 'single.bin');
  await buildTree(tree);
  await writeFile(single, randomBytes(100 * 1024));
  const before = { tree: await shoot(tree), single: await shoot(single) };

  const provider = make();
  const req = request('tree', [tree, single]);
  await provider.prepare(req);
  const started = performance.now();
  const snapshot = await provider.commit(req);
  t.diagnostic(
    `${name}: commit of 2 paths (~3.2 MiB, ${before.tree.entries.length} entries) took ${(performance.now() - started).toFixed(1)} ms`,
  );
  try {
    assert.equal(snapshot.provider, provider.name);
    assert.equal(snapshot.setId, req.setId);
    assert.doesNotThrow(() => JSON.stringify(snapshot.handle));
    await mutateTree(tree);
    await overwriteAt(single, 0, Buffer.alloc(8192, 1));

    const where = mapOf(snapshot);
    assert.deepEqual([...where.keys()].sort(), [single, tree].sort());
    assert.equal(new Set(where.values()).size, 2, 'every original has its own snapshot path');
    assertSameShot(await shoot(where.get(tree)!), before.tree);
    assertSameShot(await shoot(where.get(single)!), before.single);
  } finally {
    await provider.release(snapshot);
  }
}

async function capturesNestedAndSiblings(suite: ContractSuite): Promise<void> {
  const { make, fresh, request } = suite;
  const dir = await fresh('nested');
  const outer = join(dir, 'outer');
  const inner = join(outer, 'inner');
  const sibling = join(dir, 'sibling');
  await mkdir(inner, { recursive: true });
  await mkdir(sibling);
  await writeFile(join(inner, 'f'), 'inner');
  await writeFile(join(sibling, 'g'), 'sibling');
  const provider = make();
  const snapshot = await provider.commit(request('nested', [outer, inner, sibling]));
  try {
    const where = mapOf(snapshot);
    assert.equal(where.size, 3);
    assert.equal(new Set(where.values()).size, 3);
    assert.equal(await readFile(join(where.get(inner)!, 'f'), 'utf8'), 'inner');
    assert.equal(await readFile(join(where.get(outer)!, 'inner', 'f'), 'utf8'), 'inner');
    assert.equal(await readFile(join(where.get(sibling)!, 'g'), 'utf8'), 'sibling');
  } finally {
    await provider.release(snapshot);
  }
}

async function omitsMissingOriginals(suite: ContractSuite): Promise<void> {
  const { make, fresh, request } = suite;
  const dir = await fresh('missing');
  const present = join(dir, 'present.txt');
  await writeFile(present, 'here');
  const provider = make();
  const snapshot = await provider.commit(
    request('missing', [present, join(dir, 'absent'), join(dir, 'no', 'such', 'dir')]),
  );
  try {
    assert.deepEqual(
      snapshot.paths.map((p) => p.original),
      [present],
    );
    assert.equal(await readFile(snapshot.paths[0]!.snapshot, 'utf8'), 'here');
  } finally {
    await provider.release(snapshot);
  }
}

async function abortLeavesNothing(suite: ContractSuite): Promise<void> {
  const { make, fresh, request, rootDir, stagingDir } = suite;
  const dir = await fresh('abort');
  const tree = join(dir, 'many');
  await mkdir(tree);
  for (let i = 0; i < 300; i++) await writeFile(join(tree, `f${i}`), randomBytes(4096));
  const watched = await watchedDirs(rootDir, stagingDir);
  const listed = await listAll(watched);
  const provider = make();

  const already = new AbortController();
  already.abort(new Error('test abort'));
  await assert.rejects(provider.commit(request('abort', [tree]), { signal: already.signal }), isProviderFailure);
  assert.deepEqual(await listAll(watched), listed);

  // Abort while the commit runs: it either fails cleanly or finishes (a fast provider may).
  const during = new AbortController();
  const commit = provider.commit(request('abort-during', [tree]), { signal: during.signal });
  setImmediate(() => during.abort(new Error('test abort')));
  const outcome = await commit.then(
    (snapshot) => ({ snapshot }),
    (error: unknown) => ({ error }),
  );
  if ('error' in outcome) assert.ok(isProviderFailure(outcome.error), String(outcome.error));
  else await provider.release(outcome.snapshot);
  assert.deepEqual(await listAll(watched), listed);
  await assertWritable(join(dir, 'after-abort'));
}

async function releaseIsIdempotent(suite: ContractSuite): Promise<void> {
  const { make, fresh, request, rootDir, stagingDir } = suite;
  const dir = await fresh('release');
  await writeFile(join(dir, 'f'), 'x');
  const watched = await watchedDirs(rootDir, stagingDir);
  const listed = await listAll(watched);
  const provider = make();
  const snapshot = await provider.commit(request('release', [dir]));
  const kept = JSON.parse(JSON.stringify(snapshot)) as ProviderSnapshot;
  for (const { snapshot: path } of snapshot.paths) await lstat(path);
  await provider.release(snapshot);
  for (const { snapshot: path } of snapshot.paths) await assert.rejects(lstat(path), { code: 'ENOENT' });
  assert.deepEqual(await listAll(watched), listed);
  await provider.release(snapshot);
  await make().release(kept);
  assert.deepEqual(await listAll(watched), listed);
}

async function preservesModesAndTimes(suite: ContractSuite): Promise<void> {
  const { make, fresh, request } = suite;
  const dir = await fresh('modes');
  const tree = join(dir, 'tree');
  const past = new Date('2001-02-03T04:05:06.789Z');
  await mkdir(join(tree, 'private'), { recursive: true });
  await mkdir(join(tree, 'shared'));
  await mkdir(join(tree, 'readonly'));
  const files: [string, number][] = [
    ['private/secret', 0o600],
    ['shared/group', 0o640],
    ['tool', 0o755],
    ['setuid-tool', 0o4755],
    ['readonly/file', 0o444],
  ];
  for (const [path, mode] of files) {
    await writeFile(join(tree, path), path);
    await chmod(join(tree, path), mode);
    await utimes(join(tree, path), past, past);
  }
  for (const [path, mode] of [
    ['private', 0o700],
    ['shared', 0o2750],
    ['readonly', 0o555],
  ] as const) {
    await chmod(join(tree, path), mode);
    await utimes(join(tree, path), past, past);
  }
  const before = await shoot(tree);
  const provider = make();
  const snapshot = await provider.commit(request('modes', [tree]));
  try {
    const after = await shoot(mapOf(snapshot).get(tree)!);
    assertSameShot(after, before);
    for (const [path, mode] of files) {
      assert.equal(after.entries.find((e) => e.path === path)?.mode, mode, path);
    }
    assert.equal(after.entries.find((e) => e.path === 'shared')?.mode, 0o2750);
    assert.equal(after.mtimes.get('readonly/file'), past.getTime());
  } finally {
    await provider.release(snapshot);
  }
}

function isProviderFailure(error: unknown): boolean {
  return error instanceof QuiesceError && error.code === 'provider-failed';
}

function mapOf(snapshot: ProviderSnapshot): Map<string, string> {
  return new Map(snapshot.paths.map((p) => [p.original, p.snapshot]));
}

async function buildTree(root: string): Promise<void> {
  await mkdir(join(root, 'nested', 'deeper', 'deepest'), { recursive: true });
  await mkdir(join(root, 'nested', 'empty-dir'));
  await writeFile(join(root, 'empty'), '');
  await writeFile(join(root, 'small.txt'), 'hello\n');
  await writeFile(join(root, 'page.bin'), randomBytes(4097));
  await writeFile(join(root, 'big.bin'), randomBytes(3 * 1024 * 1024));
  await writeFile(join(root, 'nested', 'deeper', 'deepest', 'leaf.txt'), 'leaf');
  await writeFile(join(root, 'hard-a'), 'linked twice');
  await link(join(root, 'hard-a'), join(root, 'hard-b'));
  await symlink('small.txt', join(root, 'link'));
  await symlink('nowhere', join(root, 'dangling'));
  for (const odd of ODD_NAMES) await writeFile(join(root, 'nested', odd), `content of ${odd}`);
}

/** Changes in place (so copy-on-write is exercised), truncates, deletes, adds, relinks. */
async function mutateTree(root: string): Promise<void> {
  await overwriteAt(join(root, 'big.bin'), 1024 * 1024, Buffer.alloc(4096, 0xff));
  await writeFile(join(root, 'big.bin'), 'appended', { flag: 'a' });
  await truncate(join(root, 'page.bin'), 10);
  await writeFile(join(root, 'small.txt'), 'changed\n');
  await overwriteAt(join(root, 'hard-b'), 0, Buffer.from('LINKED'));
  await unlink(join(root, 'nested', 'deeper', 'deepest', 'leaf.txt'));
  await writeFile(join(root, 'new.txt'), 'new');
  await unlink(join(root, 'link'));
  await symlink('page.bin', join(root, 'link'));
  await chmod(join(root, 'big.bin'), 0o600);
  await rm(join(root, 'nested', ODD_NAMES[0]!));
}

async function overwriteAt(path: string, offset: number, data: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
}

/** Every entry under `root` (or `root` itself when it is not a directory), without following symlinks. */
async function shoot(root: string): Promise<Shot> {
  const entries: Entry[] = [];
  const mtimes = new Map<string, number>();
  const visit = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const rel = relative(root, path);
    const entry: Entry = { path: rel, type: 'other', mode: stats.mode & 0o7777 };
    if (stats.isDirectory()) {
      entry.type = 'dir';
      for (const name of await readdir(path)) {
        if (name === '.quiesce-snapshots' && rel === '') continue;
        await visit(join(path, name));
      }
    } else if (stats.isFile()) {
      entry.type = 'file';
      entry.size = stats.size;
      entry.nlink = stats.nlink;
      entry.sha256 = createHash('sha256')
        .update(await readFile(path))
        .digest('hex');
    } else if (stats.isSymbolicLink()) {
      entry.type = 'symlink';
      entry.mode = 0;
      entry.target = await readlink(path);
    }
    entries.push(entry);
    mtimes.set(rel, Math.round(stats.mtimeMs));
  };
  await visit(root);
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { entries, mtimes };
}

function assertSameShot(actual: Shot, expected: Shot): void {
  assert.deepEqual(actual.entries, expected.entries);
  for (const [path, mtime] of expected.mtimes) {
    const got = actual.mtimes.get(path);
    assert.ok(got !== undefined && Math.abs(got - mtime) <= 1, `mtime of ${JSON.stringify(path)}: ${got} != ${mtime}`);
  }
}

/** The directories where a provider could leave something: the test's, the staging one, and the top of the mount. */
async function watchedDirs(rootDir: string, stagingDir: string): Promise<{ deep: string[]; shallow: string[] }> {
  const mountPoint = (await findMount(rootDir)).mountPoint;
  return { deep: [rootDir, stagingDir], shallow: mountPoint === '/' ? [] : [mountPoint] };
}

async function listAll(dirs: { deep: string[]; shallow: string[] }): Promise<string[]> {
  const out: string[] = [];
  const visit = async (path: string, deep: boolean): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(path);
    } catch {
      return;
    }
    for (const name of names) {
      const child = join(path, name);
      out.push(child);
      if (deep && (await lstat(child)).isDirectory()) await visit(child, true);
    }
  };
  for (const dir of dirs.deep) await visit(dir, true);
  for (const dir of dirs.shallow) await visit(dir, false);
  return [...new Set(out)].sort();
}

/** Writes a file from a child process, so a frozen file system cannot block this one. */
export async function assertWritable(path: string, timeoutMs = 10_000): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    execFile('sh', ['-c', 'echo written > "$1"', 'sh', path], { timeout: timeoutMs }, (error) => {
      if (error === null) resolve();
      else reject(new Error(`could not write ${path} within ${timeoutMs} ms: ${error.message}`));
    });
  });
  assert.equal(await readFile(path, 'utf8'), 'written\n');
}
