// A bound on work in flight: callers wait for room before they start more.

/**
 * Tracks the promises in flight: `await limit.room()` before starting more work, then
 * `limit.track(work)`. A rejection is left to whoever awaits the work itself (the limiter only
 * waits for it to settle). `drain` waits for everything tracked.
 */
export class InFlightLimit {
  readonly #running = new Set<Promise<unknown>>();

  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new RangeError(`an in-flight limit must be at least 1, not ${limit}`);
  }

  get size(): number {
    return this.#running.size;
  }

  /** Waits until fewer than `limit` promises are in flight. */
  async room(): Promise<void> {
    while (this.#running.size >= this.limit) await Promise.race(this.#settled());
  }

  /** Tracks `work` until it settles (call `room()` first to stay within the limit). */
  track(work: Promise<unknown>): void {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    this.#running.add(settled);
    void settled.then(() => this.#running.delete(settled));
  }

  /** Waits until nothing tracked is in flight. */
  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.all(this.#settled());
  }

  #settled(): Promise<unknown>[] {
    return [...this.#running];
  }
}
