import { Catalog, type CatalogEntry, type ComponentRecord } from '../catalog/index.ts';
import {
  parseRawNameEscapes,
  QuiesceError,
  type CallOptions,
  type RestoreRequest,
  type WriterEndpoint,
} from '../model/index.ts';
import type { Repository } from '../repository/index.ts';
import { findNode } from './tree-nodes.ts';
import { restore, type RestoreProgress, type RestoreResult } from './restorer.ts';

/** A writer configured on this host, which may take part in restoring its component. */
export interface RestoreWriter {
  name: string;
  endpoint: WriterEndpoint;
}

export interface RestoreSetOptions extends CallOptions {
  repository: Repository;
  /** The local cache of the catalog, or null to read every manifest. */
  catalogCache: string | null;
  /** The set: its id, a unique prefix of it, or "latest". */
  ref: string;
  /** The directory to restore into; original `/srv/a` lands at `<target>/srv/a`. */
  target: string;
  /** One component, as `writer/component` or `component`: its files, with its writer's pre- and post-restore. */
  component?: string;
  /** Original files or directories to restore (absolute, or taken as such). */
  paths?: readonly string[];
  /** The writers configured here; the component's writer, if among them, runs pre- and post-restore. */
  writers?: readonly RestoreWriter[];
  onProgress?: (progress: RestoreProgress) => void;
}

export interface RestoreSetResult extends RestoreResult {
  setId: string;
}

/**
 * `quiesce restore`: the whole set, one component, or files and directories of it, below the
 * target, under a shared lock. For a component whose writer is configured here, its pre-restore
 * runs before the files are written and its post-restore after, whether the files restored or not.
 */
export async function restoreSet(options: RestoreSetOptions): Promise<RestoreSetResult> {
  const { repository, signal } = options;
  const lock = await repository.lock('shared', { signal });
  try {
    const catalog = await Catalog.load(repository, options.catalogCache, { signal });
    const entry = catalog.find(options.ref);
    if (!entry) throw new QuiesceError('bad-usage', `no backup set ${options.ref} (\`quiesce backups\` lists them)`);
    const component = options.component ? findComponent(entry, options.component) : undefined;
    const include = [
      ...(options.paths ?? []).map((p) => (p.startsWith('/') ? p : `/${p}`)),
      ...(component?.files ?? []),
    ];
    await checkPathsInSet(repository, entry, include.slice(0, options.paths?.length ?? 0), { signal });
    const writer = component && options.writers?.find((w) => w.name === component.writer);
    const request: RestoreRequest = {
      setId: entry.setId,
      components: component ? [component.component] : [],
      target: options.target,
      moreFollow: false,
    };
    const result = await aroundRestore(writer?.endpoint, request, options, () =>
      restore({
        repository,
        tree: entry.tree,
        target: options.target,
        include,
        signal,
        onProgress: options.onProgress,
      }),
    );
    return { setId: entry.setId, ...result };
  } finally {
    await lock.release();
  }
}

/** Every path asked for is in the set; those that are not are named, all at once (exit 1). */
async function checkPathsInSet(
  repository: Repository,
  entry: CatalogEntry,
  paths: readonly string[],
  options: CallOptions,
): Promise<void> {
  const missing: string[] = [];
  for (const path of paths) {
    if (!path.split('/').some(Boolean)) continue;
    // As the restore reads it: the path as given, or with `\xHH` standing for a byte that is not UTF-8.
    const forms = [...new Set([path, parseRawNameEscapes(path)])];
    const found = await Promise.all(forms.map((form) => findNode(repository, entry.tree, form, options)));
    if (found.every((node) => node === null)) missing.push(path);
  }
  if (missing.length === 0) return;
  throw new QuiesceError(
    'nonretryable',
    `set ${entry.setId} holds nothing at ${missing.join(', ')}: give each path as it was when backed up (absolute, e.g. /srv/shop)`,
  );
}

/** The component a `--component` flag names, as `writer/component` or `component`. */
function findComponent(entry: CatalogEntry, wanted: string): ComponentRecord {
  const component = entry.meta.components.find(
    (c) => c.component === wanted || `${c.writer}/${c.component}` === wanted,
  );
  if (!component) {
    const known = entry.meta.components.map((c) => c.component).join(', ') || 'none';
    throw new QuiesceError('bad-usage', `set ${entry.setId} has no component ${wanted} (it has: ${known})`);
  }
  return component;
}

/**
 * The writer's pre-restore, the restore, and its post-restore in every case: a writer that
 * prepared for a restore is always told that it ended. When the restore fails, its error is the
 * one thrown; the post-restore's own failure then cannot hide it.
 */
async function aroundRestore<T>(
  endpoint: WriterEndpoint | undefined,
  request: RestoreRequest,
  { signal }: CallOptions,
  work: () => Promise<T>,
): Promise<T> {
  if (endpoint === undefined) return work();
  await endpoint.preRestore(request, { signal });
  let result: T;
  try {
    result = await work();
  } catch (error) {
    await endpoint.postRestore(request).catch(() => undefined);
    throw error;
  }
  await endpoint.postRestore(request);
  return result;
}
