#!/usr/bin/env node
// Runs the whole suite with node's test runner: unit tests beside the code (src/**/*.test.ts)
// and integration tests (test/**/*.test.ts). Node 20 has no glob in --test, so we list files here.
// Arguments narrow the run: `npm test -- sqlite` runs the files whose path contains "sqlite".
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir, out = []) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) find(path, out);
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

// The longest files start first (minutes each on two cores), so that the short ones fill the
// other slot beside them instead of one long file running alone at the end.
const LONGEST_FIRST = [
  'kill-backup.test.ts',
  'kill-prune.test.ts',
  'repository-damage.test.ts',
  'sqlite-load.test.ts',
  'recursive-sets.test.ts',
  'short-freeze.test.ts',
  'exec-writer-guardian.test.ts',
];
const rank = (file) => {
  const i = LONGEST_FIRST.findIndex((name) => file.endsWith(name));
  return i < 0 ? LONGEST_FIRST.length : i;
};
const filters = process.argv.slice(2);
const files = [...find('src'), ...find('test')]
  .filter((f) => filters.length === 0 || filters.some((w) => f.includes(w)))
  .sort()
  .sort((a, b) => rank(a) - rank(b));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}
// Files that must run with no other test file beside them: qemu-ga's guest-fsfreeze-thaw thaws
// every frozen file system it can see, which would thaw another test's freeze mid-assertion.
const ALONE = ['qga.test.ts'];
const alone = files.filter((f) => ALONE.some((name) => f.endsWith(name)));
const together = files.filter((f) => !alone.includes(f));
let status = 0;
for (const [group, concurrency] of [
  [together, 2],
  [alone, 1],
]) {
  if (group.length === 0) continue;
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...group],
    { stdio: 'inherit' },
  );
  if (result.status !== 0) status = result.status ?? 1;
}
process.exit(status);
