// The Report answer is JSON in a string, validated by a recursive schema: guests of guests. A
// report nested deeper than any set can be is a protocol error, never a stack overflow.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { QuiesceError, type GuestReport } from '../model/index.ts';
import { MAX_GUEST_DEPTH, REPORT_METHOD } from './convert.ts';

const leaf: GuestReport = {
  name: 'vm',
  agent: 'quiesce',
  consistency: 'application',
  status: 'succeeded',
  error: null,
  message: null,
  frozenAtMs: 1,
  freezeWindowMs: 2,
  components: [],
  writers: [],
  guests: [],
};

/** A report whose guests nest `levels` reports deep, its own included. */
function nested(levels: number): string {
  const open = JSON.stringify({ ...leaf, guests: ['@'] }).split('"@"');
  return `${open[0]!.repeat(levels - 1)}${JSON.stringify(leaf)}${open[1]!.repeat(levels - 1)}`;
}

const decode = (json: string) =>
  REPORT_METHOD.responseSchema.safeParse(REPORT_METHOD.responseFromWire({ reportJson: json }));

test(`a report ${MAX_GUEST_DEPTH} levels deep decodes; one level more is a protocol error`, () => {
  assert.equal(decode(nested(1)).success, true);
  assert.equal(decode(nested(MAX_GUEST_DEPTH)).success, true);
  assert.throws(
    () => decode(nested(MAX_GUEST_DEPTH + 1)),
    (error: unknown) => {
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'protocol');
      assert.match(error.message, /nests guests more than 32 levels deep/);
      return true;
    },
  );
});

test('a report 100,000 levels deep is refused, not a stack overflow', () => {
  const deep = `${'{"guests":['.repeat(100_000)}{}${']}'.repeat(100_000)}`;
  assert.throws(
    () => decode(deep),
    (error: unknown) => error instanceof QuiesceError && error.code === 'protocol',
  );
});
