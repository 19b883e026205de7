// The Unix socket file a writer serves on: its directory made private, a stale file replaced,
// and a live one (another process still listening) or a non-socket left alone.
import { lstat, mkdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { QuiesceError } from '../model/index.ts';
import { isErrno } from '../util/index.ts';

/** Make `socketPath` free to bind: its directory exists (0700 if created), no stale socket is left. */
export async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  let existing;
  try {
    existing = await lstat(socketPath);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return;
    throw error;
  }
  if (!existing.isSocket()) {
    throw new QuiesceError(
      'bad-config',
      `${socketPath} exists and is not a socket; refusing to replace it. Choose another socket path.`,
    );
  }
  if (await socketAnswers(socketPath)) {
    throw new QuiesceError(
      'bad-config',
      `another process is already listening on ${socketPath}; stop it first or give this writer another socket path`,
    );
  }
  await unlink(socketPath);
}

/** Whether something accepts connections on the socket (a stale socket file refuses them). */
async function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect(socketPath);
    const done = (answer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(answer);
    };
    const timer = setTimeout(() => done(true), 1000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
