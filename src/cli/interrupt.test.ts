import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import { rootInterrupt, untilInterrupted } from './interrupt.ts';

type Listener = (name: NodeJS.Signals) => void;
// rawListeners: a once-listener as registered, which removes itself when called.
const listeners = (name: 'SIGINT' | 'SIGTERM') => process.rawListeners(name) as Listener[];

/** The listeners added to `name` since `before`, as the process would call them. */
const added = (name: 'SIGINT' | 'SIGTERM', before: Listener[]) => listeners(name).filter((l) => !before.includes(l));

void describe('the root interrupt', () => {
  void test('listens only once a command reads its signal, so other commands keep the default', () => {
    const before = { SIGINT: listeners('SIGINT'), SIGTERM: listeners('SIGTERM') };
    const interrupt = rootInterrupt();
    assert.equal(added('SIGINT', before.SIGINT).length, 0);
    assert.equal(added('SIGTERM', before.SIGTERM).length, 0);
    const { signal } = interrupt;
    assert.equal(interrupt.signal, signal, 'one signal for the whole run');
    assert.equal(added('SIGINT', before.SIGINT).length, 1);
    assert.equal(added('SIGTERM', before.SIGTERM).length, 1);
    interrupt.dispose();
    assert.equal(added('SIGINT', before.SIGINT).length, 0);
    assert.equal(added('SIGTERM', before.SIGTERM).length, 0);
    assert.equal(signal.aborted, false);
  });

  void test('SIGINT aborts it with a retryable QuiesceError, and a second SIGINT finds no listener of it', () => {
    const before = listeners('SIGINT');
    const interrupt = rootInterrupt();
    const { signal } = interrupt;
    for (const listener of added('SIGINT', before)) listener.call(process, 'SIGINT');
    assert.equal(signal.aborted, true);
    assert.ok(signal.reason instanceof QuiesceError);
    assert.equal(signal.reason.code, 'retryable');
    assert.equal(signal.reason.message, 'interrupted by SIGINT');
    assert.equal(added('SIGINT', before).length, 0, 'the default (end the process) is back for the next one');
    interrupt.dispose();
  });

  void test('SIGTERM aborts it too', () => {
    const before = listeners('SIGTERM');
    const interrupt = rootInterrupt();
    const { signal } = interrupt;
    for (const listener of added('SIGTERM', before)) listener.call(process, 'SIGTERM');
    assert.equal((signal.reason as QuiesceError).message, 'interrupted by SIGTERM');
    interrupt.dispose();
  });

  void test('untilInterrupted resolves at the signal, or at once when it came already', async () => {
    const before = listeners('SIGTERM');
    const interrupt = rootInterrupt();
    const waiting = untilInterrupted(interrupt);
    for (const listener of added('SIGTERM', before)) listener.call(process, 'SIGTERM');
    await waiting;
    await untilInterrupted(interrupt);
    interrupt.dispose();
  });

  void test('dispose before any read is harmless', () => {
    rootInterrupt().dispose();
  });
});
