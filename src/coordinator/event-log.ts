import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Failure, SetEvent } from '../model/index.ts';

export type SetEventInput = Omit<
  SetEvent,
  'setId' | 'at' | 't' | 'writer' | 'provider' | 'durationMs' | 'result' | 'error'
> &
  Partial<Pick<SetEvent, 'writer' | 'provider' | 'durationMs' | 'result'>> & { error?: Failure | null };

/**
 * The event log of one set: JSON lines under `<stateDir>/events/<setId>.jsonl`, one line per
 * phase start, end or failure of every writer and provider, on one monotonic clock.
 * Lines are appended synchronously so that a crash loses at most the line being written.
 */
export class EventLog {
  readonly path: string;
  readonly events: SetEvent[] = [];
  private readonly started = performance.now();

  constructor(
    stateDir: string,
    readonly setId: string,
    private readonly listener?: (event: SetEvent) => void,
  ) {
    const dir = join(stateDir, 'events');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.path = join(dir, `${setId}.jsonl`);
  }

  /** Milliseconds since the set started. */
  elapsed(): number {
    return performance.now() - this.started;
  }

  emit(input: SetEventInput): SetEvent {
    const event: SetEvent = {
      setId: this.setId,
      at: new Date().toISOString(),
      t: Math.round(this.elapsed() * 1000) / 1000,
      phase: input.phase,
      writer: input.writer ?? null,
      provider: input.provider ?? null,
      event: input.event,
      durationMs: input.durationMs ?? null,
      result: input.result ?? null,
      error: input.error ?? null,
    };
    this.events.push(event);
    appendFileSync(this.path, `${JSON.stringify(event)}\n`);
    this.listener?.(event);
    return event;
  }
}
