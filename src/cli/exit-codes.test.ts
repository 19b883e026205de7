import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../config/index.ts';
import { QuiesceError } from '../model/index.ts';
import { EXIT, exitForError, exitForStatus } from './exit-codes.ts';

void describe('exit status', () => {
  void test('0 success, 1 failure, 2 bad usage or config, 3 partial', () => {
    assert.deepEqual(EXIT, { ok: 0, failed: 1, usage: 2, partial: 3 });
  });

  void test("a set's status", () => {
    assert.equal(exitForStatus('succeeded'), 0);
    assert.equal(exitForStatus('partial'), 3);
    assert.equal(exitForStatus('failed'), 1);
  });

  void test('what the user gave was wrong: 2', () => {
    assert.equal(exitForError(new QuiesceError('bad-usage', '--wait takes a number')), 2);
    assert.equal(exitForError(new QuiesceError('wrong-password', 'no key opens')), 2);
    assert.equal(exitForError(new QuiesceError('not-a-repository', 'no config file')), 2);
    const config = new ConfigError([{ file: 'q.yaml', line: 1, column: 1, field: '', message: 'empty' }]);
    assert.equal(exitForError(config), 2);
  });

  void test('anything else: 1', () => {
    assert.equal(exitForError(new QuiesceError('damaged', 'pack 1f is short')), 1);
    assert.equal(exitForError(new QuiesceError('retryable', 'interrupted by SIGINT')), 1);
    assert.equal(exitForError(new Error('a bug')), 1);
    assert.equal(exitForError('a string'), 1);
    assert.equal(exitForError(undefined), 1);
  });
});
