import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ERROR_CODES, QuiesceError, isRetryable, type ErrorCode } from '../model/index.ts';
import { grpcStatusForFailure } from '../rpc/index.ts';
import { exitForError } from './exit-codes.ts';

/**
 * What each code meant before the registry, copied from the three switches it replaced
 * (`isRetryable` in model/failure.ts, `grpcStatusForFailure` in rpc/failure-status.ts and
 * `USAGE_CODES` in cli/exit-codes.ts). `retryable` is null where the old `isRetryable` took no
 * such code (the tool's own errors). gRPC status numbers: ABORTED 10, FAILED_PRECONDITION 9,
 * DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8, DATA_LOSS 15, UNAVAILABLE 14, INVALID_ARGUMENT 3,
 * PERMISSION_DENIED 7.
 */
const BEFORE: Record<ErrorCode, { retryable: boolean | null; grpc: number; exit: number }> = {
  retryable: { retryable: true, grpc: 10, exit: 1 },
  nonretryable: { retryable: false, grpc: 9, exit: 1 },
  timeout: { retryable: true, grpc: 4, exit: 1 },
  'out-of-resources': { retryable: true, grpc: 8, exit: 1 },
  'inconsistent-snapshot': { retryable: false, grpc: 15, exit: 1 },
  'partial-failure': { retryable: false, grpc: 9, exit: 1 },
  'not-responding': { retryable: false, grpc: 14, exit: 1 },
  'bad-config': { retryable: null, grpc: 9, exit: 2 },
  'bad-usage': { retryable: null, grpc: 3, exit: 2 },
  'set-in-progress': { retryable: null, grpc: 10, exit: 1 },
  'provider-failed': { retryable: null, grpc: 9, exit: 1 },
  protocol: { retryable: null, grpc: 3, exit: 1 },
  'wrong-password': { retryable: null, grpc: 7, exit: 2 },
  'not-a-repository': { retryable: null, grpc: 9, exit: 2 },
  'unsupported-version': { retryable: null, grpc: 9, exit: 1 },
  damaged: { retryable: null, grpc: 15, exit: 1 },
  locked: { retryable: null, grpc: 10, exit: 1 },
  'no-space': { retryable: null, grpc: 8, exit: 1 },
};

void describe('the registry of error codes', () => {
  void test('lists every code once', () => {
    assert.deepEqual([...ERROR_CODES].sort(), Object.keys(BEFORE).sort());
    assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length);
  });

  for (const code of ERROR_CODES) {
    void test(`${code}: the same retryability, gRPC status and exit status as before`, () => {
      const before = BEFORE[code];
      if (before.retryable !== null) assert.equal(isRetryable(code), before.retryable, 'retryable');
      assert.equal(grpcStatusForFailure(code), before.grpc, 'gRPC status');
      assert.equal(exitForError(new QuiesceError(code, 'x')), before.exit, 'exit status');
    });
  }
});
