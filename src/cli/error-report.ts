// What the command line prints for an error a command threw. The rule: a user-facing failure
// is one line naming the thing and what to do; a stack trace is printed only for a bug (an
// error of no known class), so that every stack in a report is worth reading.
import { QuiesceError } from '../model/index.ts';
import { BackendError } from '../repository/index.ts';
import { isRecord } from '../util/index.ts';

export interface ErrorReport {
  /** What to print, without the `quiesce: ` prefix; one line unless `bug`. */
  text: string;
  /** No known class: a bug in quiesce, printed with its stack. */
  bug: boolean;
}

/** What a system error code means to the user, and what to do about it. */
const ERRNO_TEXT: Record<string, string> = {
  EACCES: 'permission denied (run as a user who may, or change its permissions)',
  EPERM: 'operation not permitted (run as a user who may)',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'part of the path is not a directory',
  EEXIST: 'something is already there',
  EISDIR: 'it is a directory',
  ENOTEMPTY: 'the directory is not empty',
  ENOSPC: 'the disk is full (free some space and try again)',
  EDQUOT: 'the disk quota is used up (free some space and try again)',
  EROFS: 'the file system is read-only',
  ELOOP: 'too many symbolic links in the path',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many open files (raise the limit: ulimit -n)',
  ENFILE: 'too many open files on the system',
  EIO: 'an input/output error (check the disk)',
  EBUSY: 'the resource is busy',
  ENXIO: 'no such device or address',
};

/** A Node system error: `code` E..., `syscall`, and usually `path`. */
interface SystemError extends Error {
  code: string;
  syscall: string;
  path?: string;
  dest?: string;
}

function isSystemError(error: unknown): error is SystemError {
  return (
    error instanceof Error &&
    isRecord(error) &&
    typeof error.code === 'string' &&
    /^E[A-Z0-9]+$/.test(error.code) &&
    typeof error.syscall === 'string'
  );
}

/** `cannot open /etc/x: permission denied (...)`, from a system error. */
export function describeSystemError(error: SystemError): string {
  const what = ERRNO_TEXT[error.code] ?? error.message.replace(/^E[A-Z0-9]+: /, '').replace(/, .*$/, '');
  const where = error.path === undefined ? '' : ` ${error.path}${error.dest === undefined ? '' : ` to ${error.dest}`}`;
  return `cannot ${error.syscall}${where}: ${what}`;
}

/**
 * SQLite's codes for what the environment did (a read-only or full disk, a file that is not a
 * database, a missing directory), not a mistake in quiesce's SQL.
 */
const SQLITE_ENVIRONMENT = /^SQLITE_(READONLY|CANTOPEN|FULL|IOERR|PERM|BUSY|LOCKED|CORRUPT|NOTADB|AUTH)(_|$)/;

function isSqliteEnvironmentError(error: unknown): error is Error & { code: string } {
  return (
    error instanceof Error &&
    error.name === 'SqliteError' &&
    isRecord(error) &&
    typeof error.code === 'string' &&
    SQLITE_ENVIRONMENT.test(error.code)
  );
}

/** The report for anything a command threw. */
export function reportError(error: unknown): ErrorReport {
  if (error instanceof QuiesceError || error instanceof BackendError) return { text: error.message, bug: false };
  if (isSystemError(error)) return { text: describeSystemError(error), bug: false };
  if (isSqliteEnvironmentError(error))
    return {
      text: `a SQLite database could not be used: ${error.message} (${error.code}); check that the state directory and the databases in it are writable by this user`,
      bug: false,
    };
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return { text: `${text}\n(this is a bug in quiesce: please report it with the lines above)`, bug: true };
}
