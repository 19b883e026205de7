import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { prefetchMetadata } from './metadata-prefetch.ts';

/** Every entry's metadata, links not followed. */
async function describe(dir: string, out: string[] = []): Promise<string[]> {
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const st = await lstat(path);
    out.push(`${path} ${st.mode} ${st.size} ${st.mtimeMs} ${st.ctimeMs}`);
    if (st.isDirectory()) await describe(path, out);
  }
  return out;
}

test('the metadata prefetch walks a tree without following links or changing anything, and ends by itself', async () => {
  const root = await mkdtemp(join(tmpdir(), 'quiesce-prefetch-'));
  // The prefetch never holds the process open: this test does, while it waits for the end.
  const keepAlive = setInterval(() => {}, 1000);
  try {
    await mkdir(join(root, 'a', 'b'), { recursive: true });
    for (let i = 0; i < 50; i++) await writeFile(join(root, 'a', i % 2 ? 'b' : '', `f${i}`), `${i}`);
    await symlink('..', join(root, 'a', 'b', 'up')); // a loop, if links were followed
    await symlink('/', join(root, 'a', 'root'));
    await mkdir(join(root, '.quiesce-snapshots', 'x'), { recursive: true });
    const before = await describe(root);
    const prefetch = prefetchMetadata([root, join(root, 'missing')]);
    await prefetch.done;
    prefetch.stop(); // after the end: harmless
    assert.deepEqual(await describe(root), before);
    // Stopped at once: it ends.
    const stopped = prefetchMetadata(['/usr']);
    stopped.stop();
    await stopped.done;
    await prefetchMetadata([]).done;
  } finally {
    clearInterval(keepAlive);
    await rm(root, { recursive: true, force: true });
  }
});
