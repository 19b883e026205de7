// One set as the runtime holds it, and the order its phases must come in.
import { QuiesceError, type WriterState } from '../../model/index.ts';

/** The set phases a runtime accepts, in order; each may only follow the one before it (or be skipped where noted). */
export type Step =
  'idle' | 'prepare-backup' | 'prepare-snapshot' | 'freeze' | 'thaw' | 'post-snapshot' | 'backup-complete';

/** A set phase: every step but the one a set starts in. */
export type SetPhase = Exclude<Step, 'idle'>;

/** Why a thaw happens: the requester asked, or the runtime does it on its own. */
export type ThawReason = 'coordinator' | 'deadline' | 'session-lost' | 'abort';

const ORDER: Record<SetPhase, readonly Step[]> = {
  'prepare-backup': ['idle'],
  'prepare-snapshot': ['prepare-backup'],
  freeze: ['prepare-snapshot'],
  thaw: ['freeze'],
  'post-snapshot': ['thaw'],
  'backup-complete': ['post-snapshot', 'thaw'],
};

/** The state `quiesce writers` shows after a phase succeeded. */
export function stateAfter(step: Step): WriterState {
  switch (step) {
    case 'idle':
    case 'prepare-backup':
    case 'backup-complete':
      return 'stable';
    case 'prepare-snapshot':
      return 'waiting-for-freeze';
    case 'freeze':
      return 'waiting-for-thaw';
    case 'thaw':
      return 'waiting-for-post-snapshot';
    case 'post-snapshot':
      return 'waiting-for-backup-complete';
    default:
      return step satisfies never;
  }
}

export interface ActiveSet {
  id: string;
  step: Step;
  controller: AbortController;
  frozenAt: number | null;
  frozenMs: number;
  selfThawed: boolean;
  watchdog: NodeJS.Timeout | null;
  aborted: boolean;
  /** The handler call in flight, so abort can wait for it to settle. */
  inFlight: Promise<unknown> | null;
  sessions: number;
}

/** A set just begun: idle, not frozen, no session yet. */
export function beginSet(id: string): ActiveSet {
  return {
    id,
    step: 'idle',
    controller: new AbortController(),
    frozenAt: null,
    frozenMs: 0,
    selfThawed: false,
    watchdog: null,
    aborted: false,
    inFlight: null,
    sessions: 0,
  };
}

/** Throws `protocol` unless `step` may come now: not after abort, and only after the phase before it. */
export function checkOrder(set: ActiveSet, step: SetPhase, writer: string | null): void {
  if (set.aborted) {
    throw new QuiesceError('protocol', `${step} after abort of set ${set.id}`, { phase: step, writer });
  }
  if (!ORDER[step].includes(set.step)) {
    throw new QuiesceError('protocol', `${step} out of order: the last phase of set ${set.id} was ${set.step}`, {
      phase: step,
      writer,
    });
  }
}

/** The failure a thaw the runtime did on its own leaves behind: the requester did not say thaw in time. */
export function selfThawFailure(
  reason: 'deadline' | 'session-lost',
  frozenMs: number,
  writer: string | null,
): QuiesceError {
  return new QuiesceError(
    'timeout',
    reason === 'deadline'
      ? `the writer thawed itself after ${Math.round(frozenMs)} ms frozen: the freeze-to-thaw deadline passed before the requester said thaw`
      : 'the writer thawed itself: its requester went away while it was frozen',
    { phase: 'thaw', writer },
  );
}

/** Waits until `promise` settles or `ms` pass, whichever is first; never rejects. */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const settled = promise.then(
    () => undefined,
    () => undefined,
  );
  await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
