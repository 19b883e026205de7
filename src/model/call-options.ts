// What every call across a layer may carry: today only the signal that cancels it.

export interface CallOptions {
  /** Aborted when the coordinator gives up on the call (deadline or abort of the set). */
  signal?: AbortSignal;
}
