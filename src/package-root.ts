import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The directory quiesce runs from (the one with its package.json and proto/), whether this code
 * runs from src/ through tsx or bundled into dist/: files that are not modules (the protobuf
 * definitions, worker scripts) are found from here, never relative to a module's own path.
 */
export const PACKAGE_ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

function findRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto'))) return dir;
    if (dirname(dir) === dir) throw new Error(`cannot find quiesce's package directory above ${start}`);
  }
}
