import {
  componentId,
  componentKey,
  lowestConsistency,
  type ComponentReport,
  type ConsistencyLevel,
  type Failure,
  type GuestReport,
  type SetReport,
  type SetStatus,
  type SnapshotReport,
  type WriterReport,
} from '../model/index.ts';
import type { Participant } from './participant.ts';
import type { SetRun } from './set-run.ts';

/** What the report reads of a set: its options, its participants and what the phases recorded. */
export type ReportedRun = Pick<
  SetRun,
  | 'setId'
  | 'startedAt'
  | 'participants'
  | 'snapshotLevels'
  | 'snapshotRecords'
  | 'benignFailures'
  | 'error'
  | 'committed'
  | 'commitMs'
  | 'freezeStart'
  | 'freezeEnd'
  | 'useOutcome'
  | 'kept'
> & { options: Pick<SetRun['options'], 'kind' | 'backupType' | 'paths'> };

/**
 * The report as it stands; `use` sees it before backup-complete (the set has not failed so far).
 * Its rules are docs/design.md invariants 2 and 3: a component is application-consistent only if
 * its writer quiesced; the set is as consistent as its least consistent part, `failed` with a set
 * failure, `partial` when anything fell back, and benign failures lower nothing.
 */
export function buildReport(run: ReportedRun): SetReport {
  const finishedAt = new Date();
  const components = componentReports(run);
  const anyDegraded =
    run.participants.some((p) => p.error !== null) || components.some((c) => c.status !== 'succeeded');
  const status: SetStatus = run.error ? 'failed' : anyDegraded ? 'partial' : 'succeeded';
  return {
    id: run.setId,
    kind: run.options.kind,
    requestedType: run.options.backupType,
    status,
    consistency: setConsistency(run, components),
    startedAt: run.startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    freezeWindowMs: run.freezeStart !== null && run.freezeEnd !== null ? round(run.freezeEnd - run.freezeStart) : null,
    commitMs: run.commitMs === null ? null : round(run.commitMs),
    error: run.error ? run.error.toJSON() : null,
    benign: run.benignFailures,
    writers: writerReports(run),
    components,
    snapshots: snapshotReports(run),
    guests: guestReports(run),
    kept: run.kept,
    stats: {
      files: 0,
      bytesRead: 0,
      bytesAdded: 0,
      ...run.useOutcome?.stats,
      durationMs: finishedAt.getTime() - run.startedAt.getTime(),
    },
  };
}

/** How consistent a writer's files are in the snapshot: its own level if it quiesced, else its providers'. */
export function componentConsistency(run: ReportedRun, p: Participant, files: string[]): ConsistencyLevel {
  if (!run.committed) return 'none';
  if (p.stage === 'quiesced') return p.level;
  const present = files.flatMap((f) => run.snapshotLevels.get(f) ?? []);
  return present.length > 0 ? lowestConsistency(present) : 'crash';
}

function componentReports(run: ReportedRun): ComponentReport[] {
  const failedByUse = new Map<string, Failure>(
    (run.useOutcome?.failedComponents ?? []).map((f) => [componentId(f.writer, f.component), f.error]),
  );
  return run.participants.flatMap((p) =>
    (p.metadata?.components ?? []).map((c) => {
      const key = componentKey(c);
      const plan = p.plans.get(key);
      const consistency = componentConsistency(
        run,
        p,
        c.files.map((f) => f.path),
      );
      const useFailure = failedByUse.get(componentId(p.writer.name, key)) ?? null;
      const error = useFailure ?? (p.error ? { ...p.error.toJSON(), component: p.error.component ?? key } : null);
      // A component that fell back below what its writer reaches under `prefer` is never plainly successful.
      const fellBack = p.error !== null || (p.stage !== 'quiesced' && p.writer.policy !== 'off');
      const status: SetStatus = run.error || useFailure ? 'failed' : fellBack ? 'partial' : 'succeeded';
      return {
        writer: p.writer.name,
        component: key,
        requestedType: run.options.backupType,
        actualType: plan?.actualType ?? run.options.backupType,
        typeReason: plan?.typeReason ?? null,
        consistency,
        status,
        error,
      };
    }),
  );
}

function writerReports(run: ReportedRun): WriterReport[] {
  return run.participants.map((p) => ({
    name: p.writer.name,
    classId: p.metadata?.classId ?? 'unknown',
    instanceId: p.metadata?.instanceId ?? 'unknown',
    state: p.error ? p.writerState : 'stable',
    consistency: p.metadata ? componentConsistency(run, p, pathsOf(p)) : 'none',
    freezeWindowMs: p.freezeWindowMs === null ? null : round(p.freezeWindowMs),
    error: p.error ? p.error.toJSON() : null,
  }));
}

function snapshotReports(run: ReportedRun): SnapshotReport[] {
  return run.snapshotRecords.map((s) => {
    const owner = run.participants.find((p) => pathsOf(p).includes(s.original));
    const level: ConsistencyLevel =
      owner?.stage === 'quiesced' ? 'application' : (run.snapshotLevels.get(s.original) ?? 'crash');
    return { ...s, consistency: level };
  });
}

/** The lowest level of every component and plain path; `none` before the commit. */
function setConsistency(run: ReportedRun, components: ComponentReport[]): ConsistencyLevel {
  const plainLevels: ConsistencyLevel[] = run.options.paths.map((path) =>
    run.committed ? (run.snapshotLevels.get(path) ?? 'crash') : 'none',
  );
  const levels = [...components.map((c) => c.consistency), ...plainLevels];
  return !run.committed ? 'none' : levels.length > 0 ? lowestConsistency(levels) : 'crash';
}

/**
 * The nested reports of writers that stand for guests. What the host saw bounds what the guest
 * says: a guest whose images the commit did not capture is `none`, one the host dropped to
 * crash is `crash`, whatever the guest itself reached.
 */
export function guestReports(run: ReportedRun): GuestReport[] {
  return run.participants.flatMap((p) => {
    const guest = p.writer.endpoint.guestReport?.();
    if (!guest) return [];
    const hostLevel = p.metadata ? componentConsistency(run, p, pathsOf(p)) : 'none';
    const hostError = p.error ? p.error.toJSON() : null;
    const failed = run.error !== null;
    return [
      {
        ...guest,
        // A guest whose own set failed captured nothing itself ('none'), but the host took its images anyway.
        consistency: guest.consistency === 'none' ? hostLevel : lowestConsistency([guest.consistency, hostLevel]),
        status: failed ? 'failed' : hostError || guest.status !== 'succeeded' ? 'partial' : guest.status,
        error: guest.error ?? hostError,
        // The guest reports when it froze by the wall clock; the report counts from the set's start.
        frozenAtMs: guest.frozenAtMs === null ? null : round(guest.frozenAtMs - run.startedAt.getTime()),
      },
    ];
  });
}

/** Every file path of a writer's components. */
export function pathsOf(p: Participant): string[] {
  return (p.metadata?.components ?? []).flatMap((c) => c.files.map((f) => f.path));
}

/** Milliseconds to the microsecond. */
export function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
