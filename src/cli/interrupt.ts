// One interruption for every command, made once in main.ts: SIGINT or SIGTERM aborts the signal
// each command hands the core, whose finally paths then thaw, release locks and close what they opened.
import { QuiesceError } from '../model/index.ts';

/** What a command is given to stop early. */
export interface Interrupt {
  /** Aborted by the first SIGINT or SIGTERM, with a `retryable` QuiesceError as its reason. */
  readonly signal: AbortSignal;
}

export interface RootInterrupt extends Interrupt {
  /** Stops listening (the end of main). */
  dispose(): void;
}

/**
 * The process's interrupt. It listens from the moment a command first reads `signal`: a command
 * that never does has nothing to undo, and keeps Node's default (the process ends at once). The
 * listeners go with the first signal, so a second SIGINT ends the process at once too.
 */
export function rootInterrupt(): RootInterrupt {
  let listening: { signal: AbortSignal; dispose(): void } | undefined;
  return {
    get signal() {
      listening ??= interruptSignal();
      return listening.signal;
    },
    dispose() {
      listening?.dispose();
    },
  };
}

/** Resolves at the first SIGINT or SIGTERM: for a command that serves until it is told to stop. */
export function untilInterrupted(interrupt: Interrupt): Promise<void> {
  const { signal } = interrupt;
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** A signal aborted by SIGINT or SIGTERM until `dispose` is called. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => controller.abort(new QuiesceError('retryable', `interrupted by ${name}`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
