// A config file's text: a regular file of at most MAX_CONFIG_BYTES (util/regular-file.ts), so
// that a FIFO or a huge file can neither hang nor exhaust a command.
import { readRegularFile } from '../util/index.ts';

/** A config file is at most this long: a real one is a few KiB. */
export const MAX_CONFIG_BYTES = 1 << 20;

/** The UTF-8 text of `file`; throws (a plain Error for the caller to word) for anything but a small regular file. */
export function readConfigText(file: string, signal?: AbortSignal): Promise<string> {
  return readRegularFile(file, MAX_CONFIG_BYTES, signal);
}
