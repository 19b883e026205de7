import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { QuiesceError, type ErrorCode } from '../model/index.ts';
import { clientFailure, failureStatus } from './failure-status.ts';
import { FAILURE_METADATA_KEY } from './writer-proto.ts';

const context = { target: 'unix:///run/w.sock', rpc: 'Freeze', phase: 'freeze' as const, callTimeoutMs: 500 };

function serviceError(code: grpc.status, details: string, metadata = new grpc.Metadata()): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata });
}

void describe("grpc-js's details in messages", () => {
  void test('an empty resolution note and the error class name are left out', () => {
    const details = 'No connection established. Last error: Error: connect ENOENT /run/w.sock. Resolution note: ';
    const failure = clientFailure(serviceError(grpc.status.UNAVAILABLE, details), context);
    assert.equal(
      failure.message,
      'writer at unix:///run/w.sock is not responding to Freeze (No connection established. Last error: connect ENOENT /run/w.sock). Is the writer process running and listening on that socket?',
    );
  });

  void test('the size hint of RESOURCE_EXHAUSTED only when the size limit is the cause', () => {
    const size = clientFailure(
      serviceError(grpc.status.RESOURCE_EXHAUSTED, 'Received message larger than max (16778240 vs 16777216)'),
      context,
    );
    assert.match(size.message, /messages are limited to 16777216 bytes/);
    const other = clientFailure(serviceError(grpc.status.RESOURCE_EXHAUSTED, 'too many sessions'), context);
    assert.doesNotMatch(other.message, /limited to|16777216/);
    assert.match(other.message, /too many sessions/);
  });
});

void describe('a failed call without a carried failure', () => {
  const cases: [grpc.status, ErrorCode, RegExp][] = [
    [grpc.status.UNAVAILABLE, 'not-responding', /is not responding to Freeze \(gone\)\. Is the writer process running/],
    [grpc.status.DEADLINE_EXCEEDED, 'not-responding', /did not answer Freeze within 500 ms\. Is the writer process/],
    [
      grpc.status.CANCELLED,
      'not-responding',
      /dropped the Freeze call \(gone\)\. Is the writer process still running\?/,
    ],
    [
      grpc.status.RESOURCE_EXHAUSTED,
      'protocol',
      /^writer at unix:\/\/\/run\/w\.sock refused Freeze: out of resources \(gone\)$/,
    ],
    [grpc.status.UNIMPLEMENTED, 'protocol', /does not implement Freeze \(gone\); is it built for quiesce\.v1/],
    [grpc.status.INVALID_ARGUMENT, 'protocol', /^writer at unix:\/\/\/run\/w\.sock refused Freeze: gone$/],
    [grpc.status.INTERNAL, 'protocol', /^writer at unix:\/\/\/run\/w\.sock refused Freeze: gone$/],
    [grpc.status.ABORTED, 'retryable', /^writer at unix:\/\/\/run\/w\.sock failed Freeze: gone$/],
    [grpc.status.FAILED_PRECONDITION, 'nonretryable', /^writer at unix:\/\/\/run\/w\.sock failed Freeze: gone$/],
    [grpc.status.UNKNOWN, 'nonretryable', /^writer at unix:\/\/\/run\/w\.sock failed Freeze: gone$/],
  ];
  for (const [status, code, message] of cases) {
    void test(`${grpc.status[status]} is ${code}`, () => {
      const failure = clientFailure(serviceError(status, 'gone'), context);
      assert.equal(failure.code, code);
      assert.match(failure.message, message);
      assert.equal(failure.phase, 'freeze');
    });
  }

  void test('with no deadline known, and no details', () => {
    const failure = clientFailure(serviceError(grpc.status.DEADLINE_EXCEEDED, ''), {
      ...context,
      callTimeoutMs: undefined,
    });
    assert.match(failure.message, /did not answer Freeze before the deadline/);
    assert.equal(clientFailure(serviceError(grpc.status.ABORTED, ''), context).message.endsWith(': ABORTED'), true);
  });
});

void describe('a carried failure', () => {
  void test('round-trips through failureStatus, and the trailer wins over the status', () => {
    const sent = failureStatus(new QuiesceError('out-of-resources', 'no room', { writer: 'shop' }), 'freeze');
    assert.equal(sent.code, grpc.status.RESOURCE_EXHAUSTED);
    const failure = clientFailure(serviceError(grpc.status.UNAVAILABLE, sent.details, sent.metadata), context);
    assert.equal(failure.code, 'out-of-resources');
    assert.equal(failure.message, 'no room');
    assert.equal(failure.writer, 'shop');
  });

  void test('that cannot be read is a protocol error', () => {
    const metadata = new grpc.Metadata();
    metadata.set(FAILURE_METADATA_KEY, Buffer.from('{"code":"nope"}'));
    const failure = clientFailure(serviceError(grpc.status.ABORTED, 'x', metadata), context);
    assert.equal(failure.code, 'protocol');
    assert.match(failure.message, /answered Freeze with an unreadable failure .*; status: x$/);
  });

  void test('with an empty message still says who failed what', () => {
    const metadata = new grpc.Metadata();
    const carried = { code: 'timeout', phase: 'freeze', writer: 'shop', component: null, message: ' ' };
    metadata.set(FAILURE_METADATA_KEY, Buffer.from(JSON.stringify(carried)));
    const failure = clientFailure(serviceError(grpc.status.DEADLINE_EXCEEDED, 'slow', metadata), context);
    assert.equal(failure.code, 'timeout');
    assert.equal(
      failure.message,
      'writer at unix:///run/w.sock failed Freeze with timeout and no message; status: slow',
    );
  });

  void test('anything that is not a service error', () => {
    assert.equal(clientFailure(new Error('boom'), context).code, 'nonretryable');
  });
});
