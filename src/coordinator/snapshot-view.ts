import {
  componentKey,
  type BackupType,
  type ComponentResult,
  type ConsistencyLevel,
  type KnownFiles,
  type SetReport,
  type SnapshotPath,
  type UnchangedFile,
  type WriterMetadata,
} from '../model/index.ts';
import { buildReport, componentConsistency, pathsOf } from './set-report.ts';
import type { SetRun } from './set-run.ts';

/** One component as the requester sees it after the snapshot: where to read it and how. */
export interface SnapshotComponent {
  writer: string;
  component: string;
  kind: 'database' | 'files';
  /** The original files of the component (paths of its metadata). */
  files: WriterMetadata['components'][number]['files'];
  actualType: BackupType;
  consistency: ConsistencyLevel;
  result: ComponentResult | null;
}

/** What the `use` callback sees: the set id, every snapshot path, and every component. */
export interface SnapshotView {
  setId: string;
  snapshots: SnapshotPath[];
  /**
   * Component files no snapshot holds (they did not exist at the commit): never to be read where
   * an outer path is read in place, or a live `-wal` would be stored beside a database it does not belong to.
   */
  absent: string[];
  /** Files the providers left out because `knownFiles` holds them unchanged. */
  unchanged: UnchangedFile[];
  components: SnapshotComponent[];
  /** Map an original path to where it can be read in the snapshot, or null if it is not in the set. */
  resolve(original: string): string | null;
  /** The set's report as it stands (freeze window, commit, writers, consistency), for a manifest saved now. */
  report(): SetReport;
  /** The metadata of every writer that identified itself (what restore needs to know of it). */
  writers: WriterMetadata[];
}

/** The view of the set's snapshots that `use` reads, after the commit and the thaw. */
export function buildView(run: SetRun): SnapshotView {
  const live = run.livePaths.map((path) => ({ original: path, snapshot: path }));
  const paths = [...run.snapshots.flatMap((s) => s.paths), ...live];
  const taken = new Set(paths.map((p) => p.original));
  const absent = run.participants.flatMap(pathsOf).filter((path) => !taken.has(path));
  const resolve = (original: string): string | null => resolveSnapshotPath(paths, original);
  const writers = run.participants.flatMap((p) => (p.metadata ? [p.metadata] : []));
  const unchanged = run.snapshots.flatMap((s) => s.unchanged ?? []);
  const report = () => buildReport(run);
  return {
    setId: run.setId,
    snapshots: paths,
    absent,
    unchanged,
    components: componentsOf(run),
    resolve,
    report,
    writers,
  };
}

function componentsOf(run: SetRun): SnapshotComponent[] {
  return run.participants.flatMap((p) =>
    (p.metadata?.components ?? []).map((c) => {
      const key = componentKey(c);
      return {
        writer: p.writer.name,
        component: key,
        kind: c.kind,
        files: c.files,
        actualType: p.plans.get(key)?.actualType ?? run.options.backupType,
        consistency: componentConsistency(
          run,
          p,
          c.files.map((f) => f.path),
        ),
        result: p.results.get(key) ?? null,
      };
    }),
  );
}

/** Where an original path (or a file below an original directory) is in the snapshot. */
export function resolveSnapshotPath(paths: SnapshotPath[], original: string): string | null {
  let best: SnapshotPath | null = null;
  for (const entry of paths) {
    if (
      original === entry.original ||
      original.startsWith(entry.original.endsWith('/') ? entry.original : `${entry.original}/`)
    ) {
      if (!best || entry.original.length > best.original.length) best = entry;
    }
  }
  if (!best) return null;
  return best.snapshot + original.slice(best.original.length);
}

/** `known` minus whatever the writers' components name (files, or directories and all below): those are always captured. */
export function withoutComponentFiles(known: KnownFiles, componentFiles: ReadonlySet<string>): KnownFiles {
  if (componentFiles.size === 0) return known;
  const within = (dir: string) => [...componentFiles].some((path) => dir === path || dir.startsWith(`${path}/`));
  return {
    async inDirectory(originalDir, options) {
      if (within(originalDir)) return null;
      const files = await known.inDirectory(originalDir, options);
      if (files === null) return null;
      const prefix = originalDir === '/' ? '/' : `${originalDir}/`;
      return new Map([...files].filter(([name]) => !componentFiles.has(`${prefix}${name}`)));
    },
  };
}
