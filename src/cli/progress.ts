// A one-line progress display on a terminal (stderr); silent when stderr is not a terminal or
// when --json asks for a clean stdout. The core only emits numbers; this draws them.
import type { ArchiveProgress } from '../backup/archiver.ts';

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
      const line = `${label}: ${p.files} files, ${bytes(p.bytesRead)} read (${bytes(rate)}/s), ${bytes(p.bytesAdded)} added  ${p.currentPath}`;
      process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns || 100) - 1)}`);
      drawn = true;
    },
    done() {
      if (drawn) process.stderr.write('\r\x1b[K');
    },
  };
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 && unit > 0 ? value.toFixed(2) : value < 100 && unit > 0 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
