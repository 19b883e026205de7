import type { ByteRange } from '../model/index.ts';
import type { ContentRef } from '../repository/index.ts';

/** One piece of a spliced file's content, in order: a base chunk kept, or a span of the file re-read. */
export type SpliceStep = { kind: 'keep'; ref: ContentRef } | { kind: 'read'; offset: number; length: number };

/**
 * How to make the content of a file of `size` bytes of which only `ranges` changed since its
 * `base` content: every base chunk that overlaps a changed range (or that the new size cuts
 * short, or that lies past the new end) is re-read, a run of them as one span cut at the
 * untouched neighbours' boundaries; the untouched chunks are kept as they are; what the file
 * grew by past the old end is read last. The steps cover [0, size) in order.
 */
export function splicePlan(base: readonly ContentRef[], size: number, ranges: readonly ByteRange[]): SpliceStep[] {
  const starts: number[] = [];
  let oldSize = 0;
  for (const ref of base) {
    starts.push(oldSize);
    oldSize += ref.length;
  }
  const changed = changedChunks(base, starts, size, ranges);
  const steps: SpliceStep[] = [];
  let i = 0;
  while (i < base.length) {
    if (!changed.has(i)) {
      steps.push({ kind: 'keep', ref: base[i]! });
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < base.length && changed.has(j + 1)) j++;
    const from = starts[i]!;
    const to = Math.min(size, starts[j]! + base[j]!.length);
    if (to > from) steps.push({ kind: 'read', offset: from, length: to - from });
    i = j + 1;
  }
  if (size > oldSize) steps.push({ kind: 'read', offset: oldSize, length: size - oldSize });
  return steps;
}

/** The indexes of the base chunks that overlap a changed range or do not fit in the new size. */
function changedChunks(
  base: readonly ContentRef[],
  starts: readonly number[],
  size: number,
  ranges: readonly ByteRange[],
): Set<number> {
  const changed = new Set<number>();
  for (const range of ranges) {
    const from = range.offset;
    const to = Math.min(size, range.offset + range.length);
    base.forEach((ref, i) => {
      const s = starts[i]!;
      if (s < to && s + ref.length > from) changed.add(i);
    });
  }
  base.forEach((ref, i) => {
    if (starts[i]! + ref.length > size) changed.add(i);
  });
  return changed;
}
