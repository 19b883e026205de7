import { hostname } from 'node:os';
import { Catalog, type BackupMeta, type CatalogEntry, type ComponentRecord } from '../catalog/index.ts';
import { runSnapshotSet, type SnapshotSetOptions, type SnapshotView, type UseOutcome } from '../coordinator/index.ts';
import { componentId, type BackupType, type SetReport } from '../model/index.ts';
import type { Repository } from '../repository/index.ts';
import { archive, type ArchiveProgress, type PartialSource } from './archiver.ts';
import { findNode } from './tree-nodes.ts';
import { parentKnownFiles } from './parent-reuse.ts';

export interface BackupOptions extends Omit<SnapshotSetOptions, 'kind' | 'use' | 'previousStamp' | 'keep'> {
  repository: Repository;
  /** The local cache of the catalog, or null to read every manifest. */
  catalogCache: string | null;
  tags?: string[];
  onProgress?: (progress: ArchiveProgress) => void;
}

export interface BackupResult {
  report: SetReport;
  /** The manifest stored, null when the set failed before anything was stored. */
  manifestId: string | null;
}

/**
 * `quiesce backup`: one snapshot set of the writers and paths; while the applications run again,
 * the snapshot is read and stored; the manifest is saved before backup-complete tells each writer
 * whether its component succeeded (so a writer never moves its base for a backup that is not stored).
 */
export async function runBackup(options: BackupOptions): Promise<BackupResult> {
  const { repository } = options;
  const lock = await repository.lock('shared', { signal: options.signal });
  try {
    const catalog = await Catalog.load(repository, options.catalogCache, { signal: options.signal });
    let manifestId: string | null = null;
    const bases = new Map<string, CatalogEntry>();
    const parent = parentSet(catalog, options.backupType);
    const before = parent === null ? 0n : parentBefore(parent);
    const report = await runSnapshotSet({
      ...options,
      kind: 'backup',
      keep: false,
      // The plain paths' files that the parent holds unchanged are not even copied into the snapshot.
      ...(parent !== null && options.paths.length > 0
        ? { knownFiles: parentKnownFiles(repository, parent.tree, options.paths, before) }
        : {}),
      previousStamp: (writer, component, type) => {
        const base = catalog.baseFor(writer, component, type);
        if (!base) return undefined;
        bases.set(componentId(writer, component), base.entry);
        return base.record.stamp ?? undefined;
      },
      use: async (view, signal): Promise<UseOutcome> => {
        const stored = await store(view, bases, { parent, before }, options, signal);
        manifestId = stored.manifestId;
        return { stats: stored.stats };
      },
    });
    return { report, manifestId };
  } finally {
    await lock.release();
  }
}

/**
 * The set whose tree a backup of `type` compares plain paths and file components with by size
 * and mtime: incremental against the newest set, differential against the newest full.
 */
function parentSet(catalog: Catalog, type: BackupType): CatalogEntry | null {
  if (type === 'incremental') return catalog.latestWith(() => true);
  if (type === 'differential') return catalog.latestWith((e) => e.meta.requestedType === 'full');
  return null;
}

/** A second before the parent set started (ns): files with a later mtime are read again (see `canReuseParentContent`). */
function parentBefore(parent: CatalogEntry): bigint {
  const started = Date.parse(parent.meta.report.startedAt);
  return Number.isFinite(started) ? BigInt(started - 1000) * 1_000_000n : 0n;
}

async function store(
  view: SnapshotView,
  bases: Map<string, CatalogEntry>,
  { parent, before }: { parent: CatalogEntry | null; before: bigint },
  options: BackupOptions,
  signal: AbortSignal,
) {
  const { repository } = options;
  const started = performance.now();
  const type = options.backupType;

  // Partial files: a component the writer answered with changed ranges, spliced into its base's content.
  const partial = new Map<string, PartialSource>();
  for (const component of view.components) {
    const files = component.result?.partialFiles;
    if (!files || (component.actualType !== 'incremental' && component.actualType !== 'differential')) continue;
    const base = bases.get(componentId(component.writer, component.component));
    if (!base) continue;
    for (const file of files) {
      const node = await findNode(repository, base.tree, file.path, { signal });
      if (node?.type === 'file') partial.set(file.path, { base: node, size: file.size, ranges: file.ranges });
    }
  }

  // Change detection by size and mtime for plain paths and file components (never for databases,
  // whose writers say what changed): incremental against the newest set, differential the newest full.
  const trusted = [
    ...options.paths,
    ...view.components.filter((c) => c.kind === 'files').flatMap((c) => c.files.map((f) => f.path)),
  ];

  const result = await archive({
    repository,
    sources: [
      ...view.snapshots.map((s) => ({ original: s.original, snapshot: s.snapshot })),
      ...view.absent.map((original) => ({ original, snapshot: null })),
    ],
    parentTree: parent?.tree ?? null,
    parentPaths: trusted,
    parentBefore: before,
    unchanged: view.unchanged,
    partial,
    signal,
    onProgress: options.onProgress,
  });

  const soFar = view.report();
  const components: ComponentRecord[] = view.components.map((c) => {
    const reported = soFar.components.find((r) => r.writer === c.writer && r.component === c.component);
    const base = bases.get(componentId(c.writer, c.component));
    const chained = c.actualType === 'incremental' || c.actualType === 'differential';
    return {
      writer: c.writer,
      component: c.component,
      kind: c.kind,
      requestedType: type,
      actualType: c.actualType,
      typeReason: reported?.typeReason ?? null,
      consistency: c.consistency,
      succeeded: reported ? reported.status !== 'failed' : true,
      stamp: c.result?.newStamp ?? null,
      basedOn: chained && base ? base.setId : null,
      files: c.files.map((f) => f.path),
    };
  });
  const stats = {
    files: result.files,
    bytesRead: result.bytesRead,
    bytesAdded: result.bytesAdded,
    archiveMs: Math.round(performance.now() - started),
    ...(result.changedWhileRead > 0 ? { changedWhileRead: result.changedWhileRead } : {}),
  };
  const meta: BackupMeta = {
    kind: 'backup',
    hostname: hostname(),
    tags: options.tags ?? [],
    requestedType: type,
    status: soFar.status,
    consistency: soFar.consistency,
    paths: options.paths,
    components,
    writers: view.writers,
    report: { ...soFar, stats: { ...soFar.stats, ...stats } },
  };
  const manifestId = await repository.saveManifest(
    { version: 1, setId: view.setId, time: new Date().toISOString(), tree: result.tree, meta },
    { signal },
  );
  return { manifestId, stats: { ...stats, files: result.files } };
}
