// The tests every writer endpoint must pass (STYLE.md: one contract suite per plug-in kind): the
// promises of `WriterEndpoint` (src/model/writer.ts), each checked by what the application shows,
// not by what the writer says. Each case gets a fresh endpoint from `make` and cleans it up.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  QuiesceError,
  componentKey,
  type ThawResponse,
  type WriterEndpoint,
  type WriterSession,
} from '../src/model/index.ts';

export interface WriterFixture {
  endpoint: WriterEndpoint;
  /** Whether the application is held still right now, as its own users would find out. */
  isFrozen(): Promise<boolean>;
  /**
   * What the application shows the outside world, which identify must leave exactly as it was.
   * Taken before `isFrozen`, which may itself write (a probe transaction).
   */
  observe?(): Promise<unknown>;
  /** Runs after the endpoint is closed, pass or fail. */
  cleanup?(): Promise<void>;
}

export interface WriterFixtureOptions {
  /**
   * The freeze-to-thaw deadline this case asks for in freeze. A kind whose watchdog is set when
   * it is made (a guest freezes during prepare-snapshot, before the host's freeze names one)
   * takes it from here.
   */
  thawDeadlineMs: number;
}

export const WRITER_CONTRACT_CASES = [
  'identify',
  'thaw',
  'abort',
  'shutdown',
  'second-set',
  'watchdog-deadline',
  'watchdog-session',
] as const;
export type WriterContractCase = (typeof WRITER_CONTRACT_CASES)[number];

export interface WriterContractOptions {
  /** Cases a kind cannot run, each with the reason, which the run prints as the skip message. */
  skip?: { reason: string; tests: WriterContractCase[] }[];
  /** The short thaw deadline of the watchdog case (default 500 ms). */
  watchdogDeadlineMs?: number;
  /** How late after a deadline or a lost session the application may still be frozen (default 2000 ms). */
  marginMs?: number;
}

/** The deadline of every freeze that the case means to thaw itself: far longer than any case runs. */
const LONG_DEADLINE_MS = 30_000;

export function runWriterContract(
  name: string,
  make: (options: WriterFixtureOptions) => Promise<WriterFixture>,
  options: WriterContractOptions = {},
): void {
  const deadlineMs = options.watchdogDeadlineMs ?? 500;
  const marginMs = options.marginMs ?? 2000;
  const skipReason = (id: WriterContractCase): string | undefined =>
    options.skip?.find((entry) => entry.tests.includes(id))?.reason;

  const withFixture =
    (thawDeadlineMs: number, body: (fixture: WriterFixture) => Promise<void>) => async (): Promise<void> => {
      const fixture = await make({ thawDeadlineMs });
      try {
        await body(fixture);
      } finally {
        await fixture.endpoint.close();
        await fixture.cleanup?.();
      }
    };

  const contractCase = (
    id: WriterContractCase,
    title: string,
    body: (fixture: WriterFixture) => Promise<void>,
    thawDeadlineMs = LONG_DEADLINE_MS,
  ): void => {
    const reason = skipReason(id);
    test(`${id}: ${title}`, reason === undefined ? {} : { skip: reason }, withFixture(thawDeadlineMs, body));
  };

  describe(`${name} writer contract`, () => {
    contractCase('identify', 'identify has no side effects and answers the same each time', identifyCase);
    contractCase('thaw', 'thaw is idempotent: twice after a freeze, and with nothing frozen', thawCase);
    contractCase('abort', 'abort may come twice and leaves the application running', abortCase);
    contractCase('shutdown', 'shutdown never fails, whatever happened to the set, and may come twice', shutdownCase);
    contractCase('second-set', 'a second set while one is open is refused as retryable; the first goes on', secondSet);
    contractCase(
      'watchdog-deadline',
      'the watchdog thaws the application at the freeze deadline when no thaw comes',
      (fixture) => watchdogDeadline(fixture, deadlineMs, marginMs),
      deadlineMs,
    );
    contractCase('watchdog-session', 'the watchdog thaws the application at once when the session ends', (fixture) =>
      watchdogSession(fixture, marginMs),
    );
  });
}

function newSetId(): string {
  return `contract-${randomBytes(6).toString('hex')}`;
}

/** One set as the coordinator runs it: a session first, then prepare-backup of every component. */
class SetRun {
  readonly setId = newSetId();
  session: WriterSession | null = null;

  constructor(private readonly endpoint: WriterEndpoint) {}

  async begin(): Promise<void> {
    const metadata = await this.endpoint.identify();
    this.session = await this.endpoint.openSession({ setId: this.setId });
    await this.endpoint.prepareBackup({
      setId: this.setId,
      backupType: 'full',
      components: metadata.components.map((component) => ({ component: componentKey(component) })),
    });
  }

  async freeze(thawDeadlineMs = LONG_DEADLINE_MS, signal?: AbortSignal): Promise<void> {
    await this.endpoint.prepareSnapshot({ setId: this.setId });
    await this.endpoint.freeze({ setId: this.setId, thawDeadlineMs }, signal ? { signal } : {});
  }

  thaw(): Promise<ThawResponse> {
    return this.endpoint.thaw({ setId: this.setId });
  }

  abort(): Promise<void> {
    return this.endpoint.abort({ setId: this.setId });
  }

  shutdown(): Promise<void> {
    return this.endpoint.shutdown({ setId: this.setId });
  }

  /** Shutdown, then the session closes: the end of every set. */
  async end(): Promise<void> {
    await this.shutdown();
    await this.closeSession();
  }

  async closeSession(): Promise<void> {
    const session = this.session;
    this.session = null;
    await session?.close();
  }
}

async function assertFrozen(fixture: WriterFixture, when: string): Promise<void> {
  assert.equal(await fixture.isFrozen(), true, `the application is frozen ${when}`);
}

async function assertRunning(fixture: WriterFixture, when: string): Promise<void> {
  assert.equal(await fixture.isFrozen(), false, `the application is running ${when}`);
}

/** Polls until the application runs again; answers how long it took, or fails after `limitMs`. */
async function untilRunning(fixture: WriterFixture, limitMs: number, what: string): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (!(await fixture.isFrozen())) return performance.now() - started;
    const elapsed = performance.now() - started;
    if (elapsed > limitMs) assert.fail(`the application is still frozen ${Math.round(elapsed)} ms ${what}`);
    await sleep(20);
  }
}

/** A set can still begin and end: nothing of an earlier one holds the writer. */
async function assertTakesANewSet(fixture: WriterFixture): Promise<void> {
  const run = new SetRun(fixture.endpoint);
  await run.begin();
  await run.end();
  await assertRunning(fixture, 'after a set that only prepared');
}

async function identifyCase(fixture: WriterFixture): Promise<void> {
  const { endpoint } = fixture;
  const before = await fixture.observe?.();
  const first = await endpoint.identify();
  assert.deepEqual(await endpoint.identify(), first);
  assert.deepEqual(await fixture.observe?.(), before, 'identify leaves the application as it was');
  await assertRunning(fixture, 'after identify');
  assert.equal((await endpoint.status()).setId, null, 'identify begins no set');

  // At any time: identify in the middle of a freeze neither thaws nor changes its answer.
  const run = new SetRun(endpoint);
  await run.begin();
  await run.freeze();
  assert.deepEqual(await endpoint.identify(), first);
  await assertFrozen(fixture, 'after identify in the middle of a freeze');
  await run.thaw();
  await run.end();
  await assertRunning(fixture, 'after the set');
}

async function thawCase(fixture: WriterFixture): Promise<void> {
  const run = new SetRun(fixture.endpoint);
  await run.begin();
  await run.freeze();
  await assertFrozen(fixture, 'after freeze');
  assert.equal((await run.thaw()).selfThawed, false);
  await assertRunning(fixture, 'after thaw');
  assert.equal((await run.thaw()).selfThawed, false, 'a second thaw answers, and not as a self-thaw');
  await assertRunning(fixture, 'after a second thaw');
  await run.end();

  const idle = new SetRun(fixture.endpoint);
  await idle.begin();
  assert.equal((await idle.thaw()).selfThawed, false, 'thaw with nothing frozen answers');
  await assertRunning(fixture, 'after a thaw with nothing frozen');
  await idle.end();
  await assertTakesANewSet(fixture);
}

async function abortCase(fixture: WriterFixture): Promise<void> {
  const run = new SetRun(fixture.endpoint);
  await run.begin();
  await run.freeze();
  await assertFrozen(fixture, 'after freeze');
  await run.abort();
  await assertRunning(fixture, 'after abort of a frozen set');
  await run.abort();
  await assertRunning(fixture, 'after a second abort');
  await run.end();

  const prepared = new SetRun(fixture.endpoint);
  await prepared.begin();
  await prepared.abort();
  await prepared.abort();
  await assertRunning(fixture, 'after two aborts of a set that never froze');
  await prepared.end();
  await assertTakesANewSet(fixture);
}

async function shutdownCase(fixture: WriterFixture): Promise<void> {
  const { endpoint } = fixture;
  const unknown = newSetId();
  await endpoint.shutdown({ setId: unknown });
  await endpoint.shutdown({ setId: unknown });

  const scenarios: [string, (run: SetRun) => Promise<void>][] = [
    [
      'a set that froze and thawed',
      async (run) => {
        await run.freeze();
        await run.thaw();
      },
    ],
    [
      'an aborted set',
      async (run) => {
        await run.freeze();
        await run.abort();
      },
    ],
    ['a set left frozen', (run) => run.freeze()],
    ['a set whose freeze was cancelled before it was sent', cancelledFreeze],
  ];
  for (const [what, steps] of scenarios) {
    const run = new SetRun(endpoint);
    await run.begin();
    await steps(run);
    await run.shutdown();
    await assertRunning(fixture, `after shutdown of ${what}`);
    await run.shutdown();
    await run.closeSession();
    await assertRunning(fixture, `after a second shutdown of ${what}`);
    await assertTakesANewSet(fixture);
  }
}

/** A failed set: its freeze call is cancelled (a kind that froze in prepare-snapshot may ignore that). */
async function cancelledFreeze(run: SetRun): Promise<void> {
  const cancelled = new AbortController();
  cancelled.abort(new QuiesceError('retryable', 'the contract test cancelled this freeze'));
  try {
    await run.freeze(LONG_DEADLINE_MS, cancelled.signal);
  } catch (error) {
    assert.ok(error instanceof QuiesceError, `a failed freeze throws a QuiesceError, not ${String(error)}`);
  }
}

async function secondSet(fixture: WriterFixture): Promise<void> {
  const first = new SetRun(fixture.endpoint);
  await first.begin();
  const second = new SetRun(fixture.endpoint);
  await assert.rejects(
    second.begin(),
    (error: unknown) => error instanceof QuiesceError && error.code === 'retryable',
    'a second set is refused with retryable',
  );
  await second.closeSession();

  await first.freeze();
  await assertFrozen(fixture, 'after the first set froze');
  await first.thaw();
  await assertRunning(fixture, 'after the first set thawed');
  await first.end();

  const later = new SetRun(fixture.endpoint);
  await later.begin();
  await later.end();
}

async function watchdogDeadline(fixture: WriterFixture, deadlineMs: number, marginMs: number): Promise<void> {
  const run = new SetRun(fixture.endpoint);
  await run.begin();
  await run.freeze(deadlineMs);
  const frozenAt = performance.now();
  await assertFrozen(fixture, 'right after freeze');
  await untilRunning(fixture, deadlineMs + marginMs, `after a freeze with a deadline of ${deadlineMs} ms`);
  const thawedAfter = performance.now() - frozenAt;
  assert.ok(thawedAfter <= deadlineMs + marginMs, `thawed ${Math.round(thawedAfter)} ms after freeze`);
  assert.equal((await run.thaw()).selfThawed, true, 'a thaw after the watchdog says the writer thawed itself');
  await assertRunning(fixture, 'after the late thaw');
  await run.end();
  await assertTakesANewSet(fixture);
}

async function watchdogSession(fixture: WriterFixture, marginMs: number): Promise<void> {
  const run = new SetRun(fixture.endpoint);
  await run.begin();
  await run.freeze();
  await assertFrozen(fixture, 'after freeze');
  await run.closeSession();
  await untilRunning(fixture, marginMs, 'after its session ended');
  await run.shutdown();
  await assertTakesANewSet(fixture);
}
