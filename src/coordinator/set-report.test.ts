import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  QuiesceError,
  type GuestReport,
  type QuiescePolicy,
  type WriterEndpoint,
  type WriterMetadata,
} from '../model/index.ts';
import { advance, newParticipant, PARTICIPANT_STAGES, type Participant, type ParticipantStage } from './participant.ts';
import { buildReport, componentConsistency, guestReports, round, type ReportedRun } from './set-report.ts';

const STARTED = new Date('2026-12-04T03:00:00.000Z');

/** A writer with one component of the given files, identified, and moved on to `stage`. */
function writer(
  name: string,
  files: string[],
  options: { policy?: QuiescePolicy; stage?: ParticipantStage; guest?: GuestReport } = {},
): Participant {
  const endpoint = { guestReport: options.guest ? () => options.guest! : undefined } as unknown as WriterEndpoint;
  const p = newParticipant({ name, policy: options.policy ?? 'prefer', endpoint });
  const stage = options.stage ?? 'quiesced';
  for (const next of PARTICIPANT_STAGES.slice(1, PARTICIPANT_STAGES.indexOf(stage) + 1)) {
    advance(p, next);
    if (next === 'identified') {
      p.metadata = {
        name,
        classId: 'test.writer',
        instanceId: `/srv/${name}`,
        usage: 'back-end',
        components: [
          {
            name: `${name}.db`,
            logicalPath: name,
            kind: 'database',
            selectable: true,
            readableAfterThaw: false,
            files: files.map((path) => ({ path, pattern: '*', recursive: false, isLog: false })),
          },
        ],
        backupTypes: ['full'],
        restoreMethod: 'restore-if-can-replace',
      } satisfies WriterMetadata;
    }
  }
  return p;
}

function setRun(participants: Participant[], over: Partial<ReportedRun> = {}): ReportedRun {
  return {
    setId: 'set-1',
    startedAt: STARTED,
    participants,
    snapshotLevels: new Map(),
    snapshotRecords: [],
    benignFailures: [],
    error: null,
    committed: true,
    commitMs: 12.3456789,
    freezeStart: 100,
    freezeEnd: 150.5004,
    useOutcome: undefined,
    kept: false,
    options: { kind: 'backup', backupType: 'full', paths: [] },
    ...over,
  };
}

test('every writer quiesced and committed: the set succeeded, application-consistent', () => {
  const db = writer('db', ['/srv/db/db.sqlite']);
  db.freezeWindowMs = 3.14159;
  const report = buildReport(
    setRun([db], {
      snapshotLevels: new Map([['/srv/db/db.sqlite', 'crash']]),
      snapshotRecords: [{ provider: 'copy', original: '/srv/db/db.sqlite', snapshot: '/snap/db.sqlite' }],
    }),
  );
  assert.equal(report.status, 'succeeded');
  assert.equal(report.consistency, 'application');
  assert.equal(report.id, 'set-1');
  assert.equal(report.startedAt, '2026-12-04T03:00:00.000Z');
  assert.equal(report.commitMs, 12.346);
  assert.equal(report.freezeWindowMs, 50.5);
  assert.deepEqual(report.components, [
    {
      writer: 'db',
      component: 'db/db.db',
      requestedType: 'full',
      actualType: 'full',
      typeReason: null,
      consistency: 'application',
      status: 'succeeded',
      error: null,
    },
  ]);
  assert.deepEqual(report.writers, [
    {
      name: 'db',
      classId: 'test.writer',
      instanceId: '/srv/db',
      state: 'stable',
      consistency: 'application',
      freezeWindowMs: 3.142,
      error: null,
    },
  ]);
  // A quiesced writer's snapshot path is application-consistent, whatever its provider reaches alone.
  assert.deepEqual(report.snapshots, [
    { provider: 'copy', original: '/srv/db/db.sqlite', snapshot: '/snap/db.sqlite', consistency: 'application' },
  ]);
});

test('a prefer writer that failed falls back to its provider level: the set is partial and as low as its lowest part', () => {
  const web = writer('web', ['/srv/web/web.db']);
  const db = writer('db', ['/srv/db/db.sqlite'], { stage: 'prepared' });
  db.error = new QuiesceError('timeout', 'freeze took too long', { phase: 'freeze', writer: 'db' });
  db.writerState = 'failed-at-freeze';
  const report = buildReport(
    setRun([web, db], {
      snapshotLevels: new Map([
        ['/srv/web/web.db', 'filesystem'],
        ['/srv/db/db.sqlite', 'filesystem'],
      ]),
    }),
  );
  assert.equal(report.status, 'partial');
  assert.equal(report.consistency, 'filesystem');
  assert.deepEqual(
    report.components.map((c) => [c.writer, c.consistency, c.status]),
    [
      ['web', 'application', 'succeeded'],
      ['db', 'filesystem', 'partial'],
    ],
  );
  assert.deepEqual(report.components[1]!.error, {
    code: 'timeout',
    phase: 'freeze',
    writer: 'db',
    component: 'db/db.db',
    message: 'freeze took too long',
  });
  assert.equal(report.writers[1]!.state, 'failed-at-freeze');
  assert.equal(report.error, null);
});

test('a plain path lowers the set to its provider level; one with no level counts as crash', () => {
  const db = writer('db', ['/srv/db/db.sqlite']);
  const levels = new Map([['/srv/files', 'filesystem' as const]]);
  assert.equal(
    buildReport(
      setRun([db], {
        snapshotLevels: levels,
        options: { kind: 'snapshot', backupType: 'full', paths: ['/srv/files'] },
      }),
    ).consistency,
    'filesystem',
  );
  const withUnknown = setRun([db], {
    snapshotLevels: levels,
    options: { kind: 'snapshot', backupType: 'full', paths: ['/srv/files', '/srv/other'] },
  });
  assert.equal(buildReport(withUnknown).consistency, 'crash');
  assert.equal(buildReport(withUnknown).status, 'succeeded');
  // Nothing at all in the set: crash.
  assert.equal(buildReport(setRun([])).consistency, 'crash');
});

test('a failed set is failed in every component; before the commit nothing is consistent', () => {
  const db = writer('db', ['/srv/db/db.sqlite'], { stage: 'prepared' });
  const error = new QuiesceError('set-in-progress', 'busy');
  const report = buildReport(
    setRun([db], { error, committed: false, commitMs: null, freezeStart: null, freezeEnd: null }),
  );
  assert.equal(report.status, 'failed');
  assert.equal(report.consistency, 'none');
  assert.equal(report.components[0]!.status, 'failed');
  assert.equal(report.components[0]!.consistency, 'none');
  assert.equal(report.writers[0]!.consistency, 'none');
  assert.equal(report.commitMs, null);
  assert.equal(report.freezeWindowMs, null);
  assert.deepEqual(report.error, {
    code: 'set-in-progress',
    phase: null,
    writer: null,
    component: null,
    message: 'busy',
  });
});

test('a component whose use failed is failed, the set partial; benign failures and use stats are carried', () => {
  const db = writer('db', ['/srv/db/db.sqlite']);
  const failure = { code: 'nonretryable' as const, phase: null, writer: 'db', component: 'db/db.db', message: 'disk' };
  const benign = { ...failure, phase: 'post-snapshot' as const, message: 'no stamp', benign: true };
  const report = buildReport(
    setRun([db], {
      useOutcome: { failedComponents: [{ writer: 'db', component: 'db/db.db', error: failure }], stats: { files: 3 } },
      benignFailures: [benign],
    }),
  );
  assert.equal(report.status, 'partial');
  assert.equal(report.components[0]!.status, 'failed');
  assert.deepEqual(report.components[0]!.error, failure);
  // The use failing lowers no consistency: the snapshot was good.
  assert.equal(report.consistency, 'application');
  assert.deepEqual(report.benign, [benign]);
  assert.equal(report.stats.files, 3);
  assert.equal(report.stats.bytesRead, 0);
});

test('policy off: not quiesced, its files at their provider level, and the set still succeeded', () => {
  const off = writer('logs', ['/var/log/app'], { policy: 'off', stage: 'prepared' });
  const report = buildReport(setRun([off], { snapshotLevels: new Map([['/var/log/app', 'crash']]) }));
  assert.equal(report.components[0]!.status, 'succeeded');
  assert.equal(report.consistency, 'crash');
  assert.equal(report.status, 'succeeded');
  // Under prefer, the same fallback is never plainly successful.
  const prefer = writer('logs', ['/var/log/app'], { stage: 'thawed' });
  assert.equal(buildReport(setRun([prefer])).components[0]!.status, 'partial');
});

test('componentConsistency: none before the commit, the writer level once quiesced, else the lowest provider level', () => {
  const files = ['/a', '/b'];
  const levels = new Map([
    ['/a', 'filesystem' as const],
    ['/b', 'crash' as const],
  ]);
  const quiesced = writer('fs', files);
  quiesced.level = 'filesystem';
  assert.equal(componentConsistency(setRun([], { committed: false }), quiesced, files), 'none');
  assert.equal(componentConsistency(setRun([], { snapshotLevels: levels }), quiesced, files), 'filesystem');
  const thawed = writer('db', files, { stage: 'thawed' });
  assert.equal(componentConsistency(setRun([], { snapshotLevels: levels }), thawed, files), 'crash');
  assert.equal(componentConsistency(setRun([], { snapshotLevels: levels }), thawed, ['/a']), 'filesystem');
  assert.equal(componentConsistency(setRun([], { snapshotLevels: levels }), thawed, ['/elsewhere']), 'crash');
});

test("a guest's report is lowered to what its host saw, and its freeze time counts from the host set's start", () => {
  const guest: GuestReport = {
    name: 'vm1',
    agent: 'quiesce',
    consistency: 'application',
    status: 'succeeded',
    error: null,
    message: null,
    frozenAtMs: STARTED.getTime() + 250.1234,
    freezeWindowMs: 40,
    components: [],
    writers: [],
    guests: [],
  };
  const images = ['/var/lib/vm1.img'];
  const levels = new Map([['/var/lib/vm1.img', 'crash' as const]]);
  // The host quiesced the guest: the guest's own level stands.
  const [held] = guestReports(setRun([writer('vm1', images, { guest })], { snapshotLevels: levels }));
  assert.equal(held!.consistency, 'application');
  assert.equal(held!.status, 'succeeded');
  assert.equal(held!.frozenAtMs, 250.123);
  // The host fell back to crash for the guest's images: so does the guest, and it is partial.
  const dropped = writer('vm1', images, { guest, stage: 'prepared' });
  dropped.error = new QuiesceError('not-responding', 'guest agent gone', { phase: 'freeze', writer: 'vm1' });
  const [lowered] = guestReports(setRun([dropped], { snapshotLevels: levels }));
  assert.equal(lowered!.consistency, 'crash');
  assert.equal(lowered!.status, 'partial');
  assert.equal(lowered!.error?.message, 'guest agent gone');
  // The commit never captured the images: none, whatever the guest reached; a failed host set fails the guest.
  const [uncaptured] = guestReports(
    setRun([writer('vm1', images, { guest })], { committed: false, error: new QuiesceError('timeout', 'commit') }),
  );
  assert.equal(uncaptured!.consistency, 'none');
  assert.equal(uncaptured!.status, 'failed');
  // A guest whose own set failed captured nothing itself, but the host took its images: the host's level.
  const [fromHost] = guestReports(
    setRun([writer('vm1', images, { guest: { ...guest, consistency: 'none', status: 'failed' }, stage: 'thawed' })], {
      snapshotLevels: levels,
    }),
  );
  assert.equal(fromHost!.consistency, 'crash');
  assert.equal(fromHost!.status, 'partial');
  // A writer that is no guest has no nested report.
  assert.deepEqual(guestReports(setRun([writer('db', ['/srv/db'])])), []);
});

test('round keeps milliseconds to the microsecond', () => {
  assert.equal(round(1.2345678), 1.235);
  assert.equal(round(0.0004), 0);
  assert.equal(round(42), 42);
});
