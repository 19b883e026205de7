import { randomBytes } from 'node:crypto';

/** A set id that sorts by time and is unique on a host: `20261122T101530Z-a1b2c3`. */
export function newSetId(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}
