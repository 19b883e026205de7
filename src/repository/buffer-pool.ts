const MIB = 1024 * 1024;

/**
 * Buffers handed out again and again instead of allocated fresh. Fresh memory costs a page fault
 * per 4 KiB on first touch (on some virtual machines tens of microseconds each: a fresh MiB can
 * cost more than compressing it) and a garbage collection later; a backup's chunks and the
 * encoders' inputs come and go by the thousand, in a handful of sizes.
 *
 * Sizes are rounded up to whole MiB, so a buffer serves the next chunks of other sizes too.
 */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  /** Every buffer this pool made: only those are taken back. */
  private readonly ours = new WeakSet<ArrayBuffer>();

  /** `keep`: spare buffers kept at most; more given back are left to the garbage collector. */
  constructor(private readonly keep: number) {}

  /** A buffer of exactly `length` bytes (a view of a pooled one), contents undefined. */
  take(length: number): Uint8Array {
    return new Uint8Array(this.takeBuffer(length), 0, length);
  }

  /** A whole pooled ArrayBuffer of at least `length` bytes (for transferring to a worker). */
  takeBuffer(length: number): ArrayBuffer {
    let best = -1;
    for (let i = 0; i < this.free.length; i += 1) {
      const size = this.free[i]!.byteLength;
      if (size >= length && (best < 0 || size < this.free[best]!.byteLength)) best = i;
    }
    if (best >= 0) return this.free.splice(best, 1)[0]!;
    const made = new ArrayBuffer(Math.max(1, Math.ceil(length / MIB)) * MIB);
    this.ours.add(made);
    return made;
  }

  /**
   * Hands a buffer back once nothing refers to it any more. One this pool did not make, or one
   * detached by a transfer, is ignored.
   */
  give(buffer: ArrayBuffer | Uint8Array): void {
    const whole = buffer instanceof ArrayBuffer ? buffer : buffer.buffer;
    if (!(whole instanceof ArrayBuffer) || !this.ours.has(whole) || whole.byteLength === 0) return;
    if (this.free.length < this.keep && !this.free.includes(whole)) this.free.push(whole);
  }

  /** Is this one of the pool's buffers (taken, or free)? */
  owns(buffer: ArrayBuffer): boolean {
    return this.ours.has(buffer);
  }

  /** Takes in a buffer made elsewhere that nothing else refers to (one a worker handed back). */
  adopt(buffer: ArrayBuffer): void {
    if (buffer.byteLength === 0 || this.free.length >= this.keep) return;
    this.ours.add(buffer);
    this.free.push(buffer);
  }
}
