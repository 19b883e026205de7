// The directory a restore writes into: made if missing, refused with a clear message when it
// cannot be one. Everything a restore writes lies inside it; `/` is a valid target (a
// bare-metal restore puts the set back over the root).
import { lstat, mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { QuiesceError } from '../model/index.ts';
import { isErrno, messageOf } from '../util/index.ts';

/** The target, absolute, as an existing directory (made if missing). */
export async function prepareTarget(target: string): Promise<string> {
  const path = resolve(target);
  try {
    await mkdir(path, { recursive: true });
  } catch (error) {
    if (isErrno(error, 'EEXIST'))
      throw new QuiesceError('bad-usage', `the restore target ${path} is not a directory: give a directory`);
    if (isErrno(error, 'ENOTDIR'))
      throw new QuiesceError(
        'bad-usage',
        `cannot make the restore target ${path}: part of its path is not a directory; give a directory`,
      );
    if (isErrno(error, 'EACCES', 'EPERM', 'EROFS'))
      throw new QuiesceError(
        'bad-usage',
        `cannot make the restore target ${path}: ${isErrno(error, 'EROFS') ? 'the file system is read-only' : 'permission denied'}; give a directory you may write to`,
      );
    throw new QuiesceError('nonretryable', `cannot make the restore target ${path}: ${messageOf(error)}`, {
      cause: error,
    });
  }
  if (!(await lstat(path)).isDirectory())
    throw new QuiesceError('bad-usage', `the restore target ${path} is not a directory: give a directory`);
  return path;
}

/** Is `path` strictly inside the directory `target` (both absolute and normalized)? */
export function insideTarget(target: string, path: string): boolean {
  return path.startsWith(target === '/' ? '/' : `${target}/`) && path !== target;
}
