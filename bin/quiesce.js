#!/usr/bin/env node
// The `quiesce` executable: runs the bundle in dist/ (made by `npm run build`, which `npm ci`
// runs) while it is newer than every source file, else the TypeScript in src/ through tsx.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The newest modification time of the files under `dir`, in ms. */
function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return latest;
}

function bundleIsFresh() {
  try {
    return statSync(join(root, 'dist', 'main.js')).mtimeMs >= newest(join(root, 'src'));
  } catch {
    return false;
  }
}

if (bundleIsFresh()) {
  await import('../dist/main.js');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
