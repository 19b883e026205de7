// A one-line progress display on a terminal (stderr); silent when stderr is not a terminal or
// when --json asks for a clean stdout. The core only emits numbers; this draws them.
import type { ArchiveProgress } from '../backup/index.ts';
import { displayRawName } from '../model/index.ts';
import { formatBytes } from './output.ts';

export interface ProgressLine {
  update(progress: ArchiveProgress): void;
  done(): void;
}

export function progressLine(enabled: boolean, label: string): ProgressLine {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, done: () => undefined };
  const started = performance.now();
  let last = 0;
  let drawn = false;
  return {
    update(p) {
      const now = performance.now();
      if (now - last < 100) return;
      last = now;
      const seconds = (now - started) / 1000;
      const rate = p.bytesRead / Math.max(seconds, 0.001);
      const line = `${label}: ${p.files} files, ${formatBytes(p.bytesRead)} read (${formatBytes(rate)}/s), ${formatBytes(p.bytesAdded)} added  ${displayRawName(p.currentPath)}`;
      process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns || 100) - 1)}`);
      drawn = true;
    },
    done() {
      if (drawn) process.stderr.write('\r\x1b[K');
    },
  };
}
