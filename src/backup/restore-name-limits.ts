import { encodeRawName, QuiesceError } from '../model/index.ts';
import { isErrno } from '../util/index.ts';

/** The longest name and path Linux file systems take (NAME_MAX, PATH_MAX), for the message. */
const NAME_MAX = 255;
const PATH_MAX = 4096;

/**
 * The failure of one entry (`original`, restored at `path`) whose name or path is longer than
 * the file system takes (ENAMETOOLONG), saying which limit; undefined for any other error. The
 * restore's list of failures names the entry.
 */
export function nameTooLong(error: unknown, original: string, path: string): QuiesceError | undefined {
  if (!isErrno(error, 'ENAMETOOLONG')) return undefined;
  const name = original.slice(original.lastIndexOf('/') + 1);
  const nameBytes = encodeRawName(name).length;
  const pathBytes = encodeRawName(path).length;
  const why =
    nameBytes > NAME_MAX
      ? `its name is ${nameBytes} bytes, more than the file system takes (${NAME_MAX})`
      : `its path in the target is ${pathBytes} bytes, more than the file system takes (${PATH_MAX})`;
  return new QuiesceError('nonretryable', `${why} (ENAMETOOLONG); nothing of it or below it was restored`, {
    component: original,
    cause: error,
  });
}
