import { QuiesceError } from '../model/index.ts';
import { advance, groupsByUsage, isDegraded, type Participant } from './participant.ts';
import { failWriter, throwIfFailed, type SetRun } from './set-run.ts';
import { callWriter } from './writer-call.ts';

/**
 * Phase thaw after a good commit, in reverse application order. A writer that froze, whose
 * commit finished inside the window and that thawed on the coordinator's word is quiesced:
 * application-consistent.
 */
export async function thawAfterCommit(run: SetRun): Promise<void> {
  await thawAll(run, 'the commit finished');
  if (run.freezeTimer) clearTimeout(run.freezeTimer);
  throwIfFailed(run);
  for (const p of run.participants) if (p.stage === 'thawed' && !isDegraded(p)) advance(p, 'quiesced');
}

/**
 * Thaw every frozen writer in reverse application order (system, back-end, front-end). Safe to
 * run more than once and from the freeze timer meanwhile: each writer is thawed once.
 */
export async function thawAll(run: SetRun, reason: string): Promise<void> {
  const frozen = run.participants.filter((p) => p.stage === 'frozen');
  for (const group of groupsByUsage(frozen).reverse()) {
    await Promise.all(group.map((p) => thawOne(run, p, reason)));
  }
  if (run.freezeStart !== null && run.freezeEnd === null) run.freezeEnd = performance.now();
}

/** Thaws `p` if it is frozen; `reason` says what the freeze window should have lasted until. */
export async function thawOne(run: SetRun, p: Participant, reason: string): Promise<void> {
  if (p.stage !== 'frozen') return;
  advance(p, 'thawing');
  try {
    // Thaw must get through even when the set is aborted: its own deadline only.
    const response = await callWriter(run.log, p, 'thaw', AbortSignal.timeout(run.callTimeoutMs), (signal) =>
      p.writer.endpoint.thaw({ setId: run.setId }, { signal }),
    );
    p.level = response.consistency ?? 'application';
    if (response.selfThawed) {
      failWriter(
        run,
        p,
        new QuiesceError(
          'timeout',
          `writer ${p.writer.name} thawed itself after ${Math.round(response.frozenMs)} ms: the freeze window (${run.freezeTimeoutMs} ms) ran out before ${reason}`,
          { phase: 'thaw', writer: p.writer.name },
        ),
      );
    }
  } catch (error) {
    failWriter(run, p, QuiesceError.from(error, 'nonretryable', { phase: 'thaw', writer: p.writer.name }));
  } finally {
    p.freezeWindowMs = p.frozenAt === null ? null : performance.now() - p.frozenAt;
    advance(p, 'thawed');
  }
}
