// A promise started now and awaited later must not count as unhandled meanwhile.

/**
 * Marks `promise` as handled and returns it unchanged, for a promise that is started now and
 * awaited later: its rejection still reaches whoever awaits it, but Node does not report it as
 * unhandled in between.
 */
export function awaitedLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}
