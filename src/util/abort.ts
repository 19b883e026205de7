// Waiting with a signal: the listener is always removed, and the loser is never left unhandled.

/**
 * The promise's answer, or a rejection as soon as `signal` aborts. A callee that ignores the
 * signal cannot hold the caller: it stops waiting, and `promise` is marked handled so a late
 * rejection is not an unhandled one.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** `untilAborted` for an optional signal: with none, the promise itself. */
export function waitOrAbort<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  return signal ? untilAborted(promise, signal) : promise;
}
