/** The median of `values` (the upper one of an even count), 0 of none: the figure a noisy machine cannot sway much. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}
