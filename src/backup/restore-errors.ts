import { QuiesceError, type Failure } from '../model/index.ts';
import type { TreeNode } from '../repository/index.ts';
import { isErrno, messageOf } from '../util/index.ts';

/**
 * The longest path Linux creates, in bytes with its NUL (PATH_MAX): an entry whose path in the
 * target is longer fails on its own (ENAMETOOLONG), and nothing below it can be made either. It
 * bounds a restore's depth too: every level adds at least two bytes (`/x`), so no restore goes
 * deeper than 2,047 levels, whatever a (crafted) tree says.
 */
export const PATH_MAX = 4096;

/** The largest owner a node may name: 2^32 - 2 (2^32 - 1 is chown's "leave it as it is"). */
const MAX_ID = 0xffff_fffe;
/** Times as far as Linux keeps them: seconds in a signed 64-bit number. */
const MAX_TIME_NS = 2n ** 63n * 1_000_000_000n;

/** Errors of node's own argument checks: the data handed to a system call cannot be one. */
const BAD_ARGUMENT = ['ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_TYPE'];

/**
 * What of a node's metadata no file system can take (only a crafted or damaged tree says so), as
 * a sentence; null when it can be restored.
 */
export function nodeProblem(node: TreeNode): string | null {
  for (const [what, id] of [
    ['uid', node.uid],
    ['gid', node.gid],
  ] as const) {
    if (!Number.isSafeInteger(id) || id < 0 || id > MAX_ID) return `its ${what} ${id} is not a valid owner`;
  }
  const time = BigInt(node.mtimeNs);
  if (time >= MAX_TIME_NS || time <= -MAX_TIME_NS)
    return `its modification time (${node.mtimeNs.slice(0, 40)}${node.mtimeNs.length > 40 ? '…' : ''} ns) is beyond what Linux keeps`;
  if (node.type === 'symlink' && node.target.includes('\0')) return 'its symlink target holds a NUL byte';
  return null;
}

/** An entry whose path in the target is too long for Linux: why, or null. */
export function pathProblem(path: string): string | null {
  const bytes = Buffer.byteLength(path);
  if (bytes < PATH_MAX) return null;
  return `its path in the target has ${bytes} bytes, more than the ${PATH_MAX - 1} Linux allows`;
}

/**
 * An error that fails one entry of a restore, not the restore: damaged data (a blob, a tree, a
 * pack), a name or path the file system refuses, metadata no system call takes. Answers the
 * failure to record, or null for an error that must stop the restore (a full or read-only
 * target, an interrupt, a broken repository connection).
 */
export function entryFailure(error: unknown): Failure | null {
  if (error instanceof QuiesceError) return error.code === 'damaged' ? error.toJSON() : null;
  if (isErrno(error, 'ENAMETOOLONG', 'EINVAL', 'EOVERFLOW'))
    return new QuiesceError('damaged', `the file system refused it: ${messageOf(error).slice(0, 300)}`).toJSON();
  if (isErrno(error, ...BAD_ARGUMENT))
    return new QuiesceError('damaged', `its metadata cannot be restored: ${messageOf(error).slice(0, 300)}`).toJSON();
  return null;
}

/** A refusal of one entry, with why. */
export function entryRefused(why: string): QuiesceError {
  return new QuiesceError('damaged', `cannot restore it: ${why}`);
}
