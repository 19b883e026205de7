// A small file's text, read so that no file can hang or exhaust a command: only a regular file
// is read (a FIFO, a device or a directory is refused at once, without waiting on it), and at
// most `maxBytes` of it.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/** The kind of a non-regular file, for the message. */
function kindOf(stats: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  return 'a device';
}

/**
 * The UTF-8 text of `file`. Throws the system error when it cannot be opened, and a plain Error
 * ("it is a FIFO, not a regular file", "it is N bytes; ... at most M") for the caller to word.
 */
export async function readRegularFile(file: string, maxBytes: number, signal?: AbortSignal): Promise<string> {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const stats = await handle.stat();
    if (!stats.isFile())
      throw new Error(`it is ${kindOf(stats)}, not a regular file${stats.isDirectory() ? ' (EISDIR)' : ''}`);
    if (stats.size > maxBytes) throw new Error(`it is ${stats.size} bytes; such a file is at most ${maxBytes} bytes`);
    signal?.throwIfAborted();
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw new Error(`it is more than ${maxBytes} bytes; such a file is at most that long`);
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await handle.close();
  }
}
