/**
 * Seconds for utimes/lutimes from nanoseconds since the epoch. utimes takes a double, which
 * cannot hold most decimal fractions exactly, and the kernel truncates to nanoseconds, so .789 s
 * would land on .788999 s. Keep microseconds and nudge by a quarter of one, so the truncation
 * lands on the intended microsecond.
 */
export function utimesSeconds(nanoseconds: bigint | string): number {
  const micros = BigInt(nanoseconds) / 1000n;
  return Number(micros) / 1e6 + 2.5e-7;
}

/**
 * Do two times in nanoseconds fall in the same microsecond? A copy whose times were set with
 * `utimesSeconds` keeps only the microseconds of its original, so a snapshot's file and the
 * original it was cloned from compare equal here and nowhere finer.
 */
export function sameMicrosecond(a: bigint | string, b: bigint | string): boolean {
  return BigInt(a) / 1000n === BigInt(b) / 1000n;
}

/**
 * The mtime (ns) of a copy whose times were set with `utimesSeconds`: the original's, cut to the
 * microsecond (libuv keeps no finer). What a provider reports for a file it did not copy, so the
 * set records the same time whether its snapshot copied the file or left it out.
 */
export function copiedTimeNs(nanoseconds: bigint | string): string {
  return ((BigInt(nanoseconds) / 1000n) * 1000n).toString();
}
