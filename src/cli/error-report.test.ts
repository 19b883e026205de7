import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import { BackendError } from '../repository/index.ts';
import { reportError } from './error-report.ts';

describe('reportError', () => {
  test('a known class is its message alone', () => {
    assert.deepEqual(reportError(new QuiesceError('bad-usage', 'give --target')), {
      text: 'give --target',
      bug: false,
    });
    assert.deepEqual(reportError(new BackendError('the bucket b does not exist; create it first')), {
      text: 'the bucket b does not exist; create it first',
      bug: false,
    });
  });

  test('a system error names the call, the path and what it means', async () => {
    const error = await readFile('/no/such/file').catch((e: unknown) => e);
    assert.deepEqual(reportError(error), { text: 'cannot open /no/such/file: no such file or directory', bug: false });
  });

  test('anything else is a bug: printed with its stack', () => {
    const report = reportError(new TypeError('x is undefined'));
    assert.equal(report.bug, true);
    assert.match(report.text, /^TypeError: x is undefined\n\s+at /);
    assert.match(report.text, /this is a bug in quiesce/);
  });
});
