// A worker thread of prefetchMetadata: lists the directories under the given paths and reads
// each entry's metadata (readdir and lstat, nothing else, never following a link), so that the
// snapshot's walk that follows finds it cached. Plain JavaScript, so it runs whatever loader the
// main thread used for TypeScript.
import { Buffer } from 'node:buffer';
import { lstatSync, readdirSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

const { paths, skipNames, limit } = workerData;
const skip = new Set(skipNames);
const SLASH = Buffer.from('/');
let seen = 0;

// A skipped name (a provider's snapshot store) is skipped only at the root of a file system or
// subvolume, as the walk does (providers/snapshot-store.ts): `..` on another device, or `/`.
function atFileSystemRoot(dir) {
  try {
    const own = lstatSync(dir);
    const up = lstatSync(Buffer.concat([dir, SLASH, Buffer.from('..')]));
    return own.dev !== up.dev || own.ino === up.ino;
  } catch {
    return false;
  }
}

// Depth first, in listing order, as the walk goes. Paths are bytes: names need not be UTF-8.
const stack = paths.map((path) => Buffer.from(path)).reverse();
while (stack.length > 0 && seen < limit) {
  const dir = stack.pop();
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true, encoding: 'buffer' });
  } catch {
    continue; // gone, not a directory, not readable: the walk will say so if it matters
  }
  const below = [];
  const prefix = dir[dir.length - 1] === 0x2f ? dir : Buffer.concat([dir, SLASH]);
  let atRoot;
  for (const entry of entries) {
    if (skip.has(entry.name.toString()) && (atRoot ??= atFileSystemRoot(dir))) continue;
    const path = Buffer.concat([prefix, entry.name]);
    seen += 1;
    try {
      lstatSync(path);
    } catch {
      // vanished meanwhile
    }
    if (entry.isDirectory()) below.push(path);
  }
  for (let i = below.length - 1; i >= 0; i -= 1) stack.push(below[i]);
}
