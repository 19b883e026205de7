import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BackendError, type Backend, type BackendErrorKind, type ObjectInfo, type ObjectType } from './backend.ts';
import { RetryBackend, isTransient, type RetryEvent } from './retry-backend.ts';

/** An S3-style server error with an HTTP status, as the SDK throws it. */
function httpError(status: number, code = 'Error'): Error {
  return Object.assign(new Error(`HTTP ${status}`), { name: code, $metadata: { httpStatusCode: status } });
}

function wrapped(cause: unknown, kind?: BackendErrorKind): BackendError {
  return new BackendError('backend failed', kind === undefined ? { cause } : { cause, kind });
}

function networkError(code: string): Error {
  return Object.assign(new Error(`connect ${code}`), { code });
}

/** A backend whose calls fail with the scripted errors, in order, then succeed. */
class FlakyBackend implements Backend {
  readonly location = 'flaky://test';
  calls = 0;
  constructor(
    private readonly failures: Error[],
    private readonly listing: string[][] = [],
  ) {}

  private async step(): Promise<void> {
    this.calls++;
    const failure = this.failures.shift();
    if (failure !== undefined) throw failure;
  }
  async save(): Promise<void> {
    await this.step();
  }
  async load(_type: ObjectType, name: string): Promise<Buffer> {
    await this.step();
    return Buffer.from(name);
  }
  async stat(_type: ObjectType, name: string): Promise<ObjectInfo> {
    await this.step();
    return { name, size: 1 };
  }
  async *list(): AsyncGenerator<ObjectInfo> {
    this.calls++;
    const names = this.listing.shift() ?? [];
    for (const name of names) {
      if (name === 'FAIL') throw this.failures.shift() ?? new Error('no failure scripted');
      yield { name, size: 1 };
    }
  }
  async remove(): Promise<void> {
    await this.step();
  }
  async exists(): Promise<boolean> {
    await this.step();
    return true;
  }
  async close(): Promise<void> {}
}

const fast = { initialDelayMs: 1, maxDelayMs: 4 };

describe('isTransient', () => {
  test('network errors, 5xx, throttling and timeouts are transient, wherever they sit in the cause chain', () => {
    for (const error of [
      networkError('ECONNRESET'),
      networkError('ECONNREFUSED'),
      networkError('ETIMEDOUT'),
      httpError(500, 'InternalError'),
      httpError(503, 'ServiceUnavailable'),
      httpError(503, 'SlowDown'),
      httpError(429),
      Object.assign(new Error('slow'), { Code: 'SlowDown' }),
      wrapped(networkError('EPIPE')),
      wrapped(httpError(502)),
      wrapped(wrapped(httpError(504))),
    ]) {
      assert.equal(isTransient(error), true, String(error));
    }
  });

  test('missing objects, a full disk, aborts, client mistakes and plain errors are permanent', () => {
    const abort = new DOMException('aborted', 'AbortError');
    for (const error of [
      wrapped(httpError(503), 'not-found'),
      wrapped(networkError('ECONNRESET'), 'no-space'),
      httpError(404, 'NoSuchKey'),
      httpError(403, 'AccessDenied'),
      httpError(400),
      abort,
      wrapped(abort),
      new Error('short read'),
      new BackendError('short read'),
      'a string',
      undefined,
      null,
    ]) {
      assert.equal(isTransient(error), false, String(error));
    }
  });
});

describe('RetryBackend', () => {
  test('retries transient failures with growing delays, reports each retry, and returns the result', async () => {
    const inner = new FlakyBackend([wrapped(httpError(503)), wrapped(networkError('ECONNRESET'))]);
    const events: RetryEvent[] = [];
    const backend = new RetryBackend(inner, {
      initialDelayMs: 10,
      maxDelayMs: 40,
      onRetry: (event) => events.push(event),
    });
    assert.equal((await backend.load('data', 'abcd')).toString(), 'abcd');
    assert.equal(inner.calls, 3);
    assert.deepEqual(
      events.map((e) => [e.operation, e.type, e.name, e.attempt]),
      [
        ['load', 'data', 'abcd', 1],
        ['load', 'data', 'abcd', 2],
      ],
    );
    assert.ok(events[0]!.delayMs >= 5 && events[0]!.delayMs <= 10, `first delay ${events[0]!.delayMs}`);
    assert.ok(events[1]!.delayMs >= 10 && events[1]!.delayMs <= 20, `second delay ${events[1]!.delayMs}`);
    assert.equal(backend.location, inner.location);
  });

  test('never retries notFound, noSpace or a client error', async () => {
    for (const failure of [
      wrapped(httpError(404), 'not-found'),
      wrapped(networkError('ENOSPC'), 'no-space'),
      wrapped(httpError(403)),
    ]) {
      const inner = new FlakyBackend([failure]);
      await assert.rejects(new RetryBackend(inner, fast).stat('index', 'abcd'), (error) => error === failure);
      assert.equal(inner.calls, 1);
    }
  });

  test('gives up after maxAttempts, saying so and keeping the cause', async () => {
    const last = wrapped(httpError(500));
    const inner = new FlakyBackend([wrapped(httpError(500)), wrapped(httpError(500)), last, wrapped(httpError(500))]);
    await assert.rejects(
      new RetryBackend(inner, { ...fast, maxAttempts: 3 }).save('data', 'abcd', new Uint8Array(1)),
      (error: unknown) => {
        assert.ok(error instanceof BackendError);
        assert.match(error.message, /^backend failed \(gave up after 3 attempts over \d+ ms\)$/);
        assert.equal(error.cause, last);
        return true;
      },
    );
    assert.equal(inner.calls, 3);
  });

  test('an abort during the backoff ends the wait at once with the abort reason', async () => {
    const inner = new FlakyBackend([wrapped(httpError(503)), wrapped(httpError(503))]);
    const controller = new AbortController();
    const reason = new Error('deadline');
    const backend = new RetryBackend(inner, {
      initialDelayMs: 60_000,
      maxDelayMs: 60_000,
      onRetry: () => setTimeout(() => controller.abort(reason), 5),
    });
    const started = Date.now();
    await assert.rejects(backend.remove('locks', 'abcd', { signal: controller.signal }), (error) => error === reason);
    assert.ok(Date.now() - started < 5000, 'did not sit out the backoff');
    assert.equal(inner.calls, 1);
  });

  test('a listing that fails part-way starts again and yields each name once', async () => {
    const inner = new FlakyBackend(
      [wrapped(httpError(503))],
      [
        ['aa', 'bb', 'FAIL'],
        ['aa', 'bb', 'cc'],
      ],
    );
    const names: string[] = [];
    for await (const info of new RetryBackend(inner, fast).list('index')) names.push(info.name);
    assert.deepEqual(names, ['aa', 'bb', 'cc']);
    assert.equal(inner.calls, 2);

    const permanent = new FlakyBackend([new BackendError('listing refused')], [['aa', 'FAIL']]);
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const info of new RetryBackend(permanent, fast).list('index')) seen.push(info.name);
    }, /listing refused/);
    assert.deepEqual(seen, ['aa']);
  });
});
