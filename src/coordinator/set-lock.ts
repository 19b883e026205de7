import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError } from '../model/index.ts';
import { isErrno, processStart, recordedProcessAlive } from '../util/index.ts';

interface LockContent {
  pid: number;
  /** When that process started: a pid reused since is not the holder. */
  start?: string | null;
  setId: string;
  startedAt: string;
}

/**
 * At most one set is being created per host: an exclusive lock file under the state directory.
 * A lock whose process is gone is stale and is taken over. A live one fails with
 * `set-in-progress`, or is waited for up to `waitMs`.
 */
export async function acquireSetLock(
  stateDir: string,
  setId: string,
  options: { waitMs?: number; signal?: AbortSignal } = {},
): Promise<AsyncDisposable & { release(): Promise<void> }> {
  const dir = join(stateDir, 'locks');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'set.lock');
  const deadline = Date.now() + (options.waitMs ?? 0);
  const content: LockContent = {
    pid: process.pid,
    start: processStart(process.pid),
    setId,
    startedAt: new Date().toISOString(),
  };
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const handle = await open(path, 'wx', 0o600);
      await handle.writeFile(JSON.stringify(content));
      await handle.sync();
      await handle.close();
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        const current = await readLock(path);
        if (current?.setId === setId && current.pid === process.pid) await rm(path, { force: true });
      };
      return { release, [Symbol.asyncDispose]: release };
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
    }
    const holder = await readLock(path);
    if (holder === null || !recordedProcessAlive(holder.pid, holder.start)) {
      // Stale: its process is gone, its pid reused, or the file is torn. Take it over.
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new QuiesceError(
        'set-in-progress',
        `set ${holder.setId} is being created on this host by process ${holder.pid} since ${holder.startedAt}; wait for it to finish (or use --wait)`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function readLock(path: string): Promise<LockContent | null> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<LockContent>;
    if (typeof parsed.pid !== 'number' || typeof parsed.setId !== 'string') return null;
    return parsed as LockContent;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return { pid: -1, setId: '', startedAt: '' };
    return null;
  }
}
