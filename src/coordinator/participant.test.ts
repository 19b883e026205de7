import assert from 'node:assert/strict';
import { test } from 'node:test';
import { QuiesceError, type QuiescePolicy, type WriterEndpoint, type WriterMetadata } from '../model/index.ts';
import {
  PARTICIPANT_STAGES,
  advance,
  groupsByUsage,
  hasReached,
  isDegraded,
  newParticipant,
  wasPrepared,
  type Participant,
} from './participant.ts';

function participant(name: string, policy: QuiescePolicy = 'prefer'): Participant {
  return newParticipant({ name, policy, endpoint: {} as WriterEndpoint });
}

test('a participant goes through every stage in order, and is prepared from prepare-backup on', () => {
  const p = participant('db');
  assert.equal(p.stage, 'listed');
  assert.equal(wasPrepared(p), false);
  const seen: string[] = [p.stage];
  for (const stage of PARTICIPANT_STAGES.slice(1)) {
    advance(p, stage);
    seen.push(p.stage);
  }
  assert.deepEqual(seen, ['listed', 'identified', 'prepared', 'frozen', 'thawing', 'thawed', 'quiesced']);
  assert.equal(wasPrepared(p), true);
  assert.equal(hasReached(p, 'frozen'), true);
});

test('a stage that does not follow is refused, and the stage stays as it was', () => {
  const p = participant('db');
  assert.throws(() => advance(p, 'frozen'), /writer db cannot go from stage listed to frozen \(only from prepared\)/);
  assert.throws(() => advance(p, 'listed'), /cannot go from stage listed to listed \(only from nowhere\)/);
  assert.equal(p.stage, 'listed');
  advance(p, 'identified');
  advance(p, 'prepared');
  assert.throws(() => advance(p, 'prepared'), /from stage prepared to prepared/);
  // A writer is never thawed without being frozen, nor quiesced before its thaw answered.
  assert.throws(() => advance(p, 'thawing'), /from stage prepared to thawing/);
  advance(p, 'frozen');
  assert.throws(() => advance(p, 'quiesced'), /from stage frozen to quiesced \(only from thawed\)/);
  assert.throws(() => advance(p, 'thawed'), /only from thawing/);
  assert.equal(p.stage, 'frozen');
  assert.equal(hasReached(p, 'thawing'), false);
});

test('degraded: policy off from the start, or any failure under any policy', () => {
  assert.equal(isDegraded(participant('off', 'off')), true);
  const prefer = participant('prefer');
  assert.equal(isDegraded(prefer), false);
  prefer.error = new QuiesceError('timeout', 'slow', { phase: 'freeze' });
  assert.equal(isDegraded(prefer), true);
  const require = participant('require', 'require');
  require.error = new QuiesceError('nonretryable', 'no');
  assert.equal(isDegraded(require), true);
});

test('groupsByUsage orders front-end, back-end, system, a writer without metadata counting as back-end', () => {
  const withUsage = (name: string, usage: WriterMetadata['usage'] | null) => {
    const p = participant(name);
    if (usage) p.metadata = { usage } as WriterMetadata;
    return p;
  };
  const groups = groupsByUsage([
    withUsage('os', 'system'),
    withUsage('db', 'back-end'),
    withUsage('web', 'front-end'),
    withUsage('unknown', null),
    withUsage('api', 'front-end'),
  ]);
  assert.deepEqual(
    groups.map((g) => g.map((p) => p.writer.name)),
    [['web', 'api'], ['db', 'unknown'], ['os']],
  );
  assert.deepEqual(groupsByUsage([withUsage('os', 'system')]).length, 1);
});
