// Generated file trees for round-trip tests, and a deep comparison of two trees that reports
// every difference a user would care about: content, type, mode, mtime, owner, symlink target.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface GeneratedTree {
  root: string;
  files: number;
  bytes: number;
}

/** Empty and large files, a sparse file, unicode and odd names, symlinks, deep paths, modes and times. */
export async function generateTree(root: string, options: { largeMiB?: number } = {}): Promise<GeneratedTree> {
  let files = 0;
  let bytes = 0;
  const file = async (path: string, data: Buffer, mode = 0o644) => {
    await writeFile(path, data);
    await chmod(path, mode);
    files++;
    bytes += data.length;
  };
  await mkdir(root, { recursive: true });
  await file(join(root, 'empty'), Buffer.alloc(0));
  await file(join(root, 'large.bin'), randomBytes((options.largeMiB ?? 12) << 20));
  await file(join(root, 'text.txt'), Buffer.from('hello\n'.repeat(1000)));
  await file(join(root, 'private.key'), randomBytes(100), 0o600);
  await file(join(root, 'run.sh'), Buffer.from('#!/bin/sh\necho hi\n'), 0o755);
  // Unicode and odd names.
  const odd = join(root, 'odd names');
  await mkdir(odd);
  for (const name of [
    'ünïcødé ✓.txt',
    '日本語のファイル',
    'emoji 🦀🐘',
    'new\nline',
    ' leading space',
    'trailing space ',
    '-dash',
    '#hash',
    'quote\'"s',
    'back\\slash',
    '*star?',
    `${'l'.repeat(250)}.x`,
  ]) {
    await file(join(odd, name), Buffer.from(`content of ${name}\n`));
  }
  // A sparse file: 64 MiB with two islands of data.
  const sparse = join(root, 'sparse.img');
  const handle = await open(sparse, 'w');
  await handle.write(Buffer.from('start'), 0, 5, 0);
  await handle.write(Buffer.from('middle'), 0, 6, 32 << 20);
  await handle.truncate(64 << 20);
  await handle.close();
  files++;
  // Symlinks: relative, absolute, dangling, to a directory.
  await symlink('text.txt', join(root, 'link-relative'));
  await symlink('/etc/hostname', join(root, 'link-absolute'));
  await symlink('does/not/exist', join(root, 'link-dangling'));
  await symlink('odd names', join(root, 'link-dir'));
  // Deep paths.
  let deep = join(root, 'deep');
  for (let i = 0; i < 40; i++) deep = join(deep, `level-${i}`);
  await mkdir(deep, { recursive: true });
  await file(join(deep, 'bottom.txt'), Buffer.from('the bottom\n'));
  // Times: an old mtime with nanoseconds, and a directory mode.
  await utimes(join(root, 'text.txt'), new Date('2001-02-03T04:05:06.789Z'), new Date('2001-02-03T04:05:06.789Z'));
  await mkdir(join(root, 'locked-dir'), { mode: 0o750 });
  await file(join(root, 'locked-dir', 'inside'), Buffer.from('x'));
  await chmod(join(root, 'locked-dir'), 0o750);
  return { root, files, bytes };
}

export interface Entry {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  size: number;
  sha256?: string;
  target?: string;
}

/** Every entry below `root`, keyed by relative path. */
export async function describeTree(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = await lstat(path);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.floor(st.mtimeMs), size: st.size };
      if (st.isSymbolicLink()) out.set(relPath, { ...base, type: 'symlink', target: await readlink(path), mtimeMs: 0 });
      else if (st.isDirectory()) {
        out.set(relPath, { ...base, type: 'dir', size: 0 });
        await walk(path, relPath);
      } else
        out.set(relPath, {
          ...base,
          type: 'file',
          sha256: createHash('sha256')
            .update(await readFile(path))
            .digest('hex'),
        });
    }
  };
  await walk(root, '');
  return out;
}

/** The differences between two described trees, one line each; empty when equal. */
export function diffTrees(expected: Map<string, Entry>, actual: Map<string, Entry>): string[] {
  const problems: string[] = [];
  for (const [path, e] of expected) {
    const a = actual.get(path);
    if (!a) {
      problems.push(`missing: ${path}`);
      continue;
    }
    for (const key of ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'mtimeMs'] as const) {
      if (e[key] !== a[key]) problems.push(`${path}: ${key} ${String(e[key])} != ${String(a[key])}`);
    }
  }
  for (const path of actual.keys()) if (!expected.has(path)) problems.push(`unexpected: ${path}`);
  return problems;
}
