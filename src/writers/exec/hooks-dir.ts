/**
 * A directory of freeze/thaw hooks in the fsfreeze-hook.d convention of the QEMU guest agent:
 * every executable regular file in it is run with the argument `freeze` or `thaw`.
 */
import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Names that are never hooks: hidden files (a shell glob `*` skips them too), editor and package
 * manager leftovers. The same list as qemu's `fsfreeze-hook`, plus every `.dpkg-*`.
 */
export function isIgnoredHookName(name: string): boolean {
  return (
    name.startsWith('.') ||
    name.endsWith('~') ||
    /\.dpkg-[^/]*$/.test(name) ||
    /\.(bak|orig|rpmnew|rpmorig|rpmsave|sample)$/.test(name)
  );
}

/**
 * The hooks to run, as absolute paths sorted by name (byte order, as `LC_ALL=C ls`):
 * executable regular files (symlinks followed), ignored names and everything else skipped.
 */
export async function listHooks(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((name) => !isIgnoredHookName(name));
  names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const hooks: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    try {
      if (!(await stat(path)).isFile()) continue;
      await access(path, constants.X_OK);
    } catch {
      continue; // Not executable, or gone since readdir (a dangling symlink too).
    }
    hooks.push(path);
  }
  return hooks;
}
