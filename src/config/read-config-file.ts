// A config file's text, read so that no file can hang or exhaust a command: only a regular
// file is read (a FIFO, a device or a directory is refused, without waiting on it), and at most
// MAX_CONFIG_BYTES of it.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/** A config file is at most this long: a real one is a few KiB. */
export const MAX_CONFIG_BYTES = 1 << 20;

/** The kind of a non-regular file, for the message. */
function kindOf(stats: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  return 'a device';
}

/** The UTF-8 text of `file`; throws (a plain Error for the caller to word) for anything but a small regular file. */
export async function readConfigText(file: string, signal?: AbortSignal): Promise<string> {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const stats = await handle.stat();
    if (!stats.isFile())
      throw new Error(`it is ${kindOf(stats)}, not a regular file${stats.isDirectory() ? ' (EISDIR)' : ''}`);
    if (stats.size > MAX_CONFIG_BYTES)
      throw new Error(`it is ${stats.size} bytes; a config file is at most ${MAX_CONFIG_BYTES} bytes`);
    signal?.throwIfAborted();
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_CONFIG_BYTES)
        throw new Error(`it is more than ${MAX_CONFIG_BYTES} bytes; a config file is at most that long`);
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await handle.close();
  }
}
