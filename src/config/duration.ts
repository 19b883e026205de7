/**
 * Durations as the config file and the command line write them: `250ms`, `10s`, `1.5m`, `1h`,
 * or a bare number of milliseconds. The result is a whole number of milliseconds.
 */

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/**
 * The longest duration we accept: Node's timers (and so `AbortSignal.timeout`) fire at once
 * for anything longer than 2^31-1 ms, which would turn a long deadline into no deadline at all.
 */
export const MAX_DURATION_MS = 2_147_483_647;

export const DURATION_HINT = 'write a duration like "250ms", "10s", "2m", "1h", or a number of milliseconds';

const PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;

/**
 * Parses a duration into milliseconds.
 *
 * @example parseDuration('10s') // 10000
 * @example parseDuration(250)   // 250
 * @throws RangeError with a message meant for the operator when the value is not a duration.
 */
export function parseDuration(value: string | number): number {
  let ms: number;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`${String(value)} is not a duration; ${DURATION_HINT}`);
    ms = value;
  } else {
    const text = value.trim();
    const match = PATTERN.exec(text);
    if (!match) {
      const hint = /^\d+(\.\d+)?$/.test(text)
        ? `"${text}" has no unit; write "${text}ms" or "${text}s"`
        : `"${value}" is not a duration`;
      throw new RangeError(`${hint}; ${DURATION_HINT}`);
    }
    ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  }
  ms = Math.round(ms);
  if (ms <= 0) throw new RangeError(`a duration must be longer than zero; ${DURATION_HINT}`);
  if (ms > MAX_DURATION_MS) {
    throw new RangeError(
      `${formatDuration(ms)} is too long: at most ${formatDuration(MAX_DURATION_MS)} (about 24 days)`,
    );
  }
  return ms;
}

/** A duration in milliseconds in the shortest exact unit: `250ms`, `10s`, `2m`, `1h`. */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
