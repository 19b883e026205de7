import Database from 'better-sqlite3';
import type { BackupType, CallOptions } from '../model/index.ts';
import { messageOf } from '../util/index.ts';
import { cacheRebuiltMessage, isDamage, openCatalogCache, removeCache } from './catalog-cache.ts';
import { BackupMetaSchema, type BackupMeta, type ComponentRecord } from './manifest-meta.ts';
import type { CatalogRepository, ManifestEnvelope } from '../repository/index.ts';

/** One backup set as the catalog knows it. */
export interface CatalogEntry {
  manifestId: string;
  setId: string;
  time: string;
  tree: string;
  meta: BackupMeta;
}

/**
 * Backup sets, chains and stamps, derived from the repository's manifests and cached in a local
 * SQLite file. The cache is only a cache: a missing or stale file is rebuilt from the manifests
 * (new ones are read, removed ones forgotten) every time the catalog is opened.
 */
export class Catalog {
  private constructor(private readonly entries: CatalogEntry[]) {}

  /**
   * Reads the repository's manifests, using and refreshing the cache file when given. A damaged
   * cache file is replaced and rebuilt (`onCacheRebuilt` is told why); a cache that fails while
   * in use is dropped and the manifests read again without it.
   */
  static async load(
    repository: CatalogRepository,
    cacheFile: string | null,
    options: CallOptions & { onCacheRebuilt?: (message: string) => void } = {},
  ): Promise<Catalog> {
    const ids = new Set(await repository.listManifests(options));
    if (cacheFile === null) return new Catalog(sortEntries(await readEntries(repository, ids, null, options)));
    const { db, damage } = openCatalogCache(cacheFile);
    if (damage !== null) options.onCacheRebuilt?.(cacheRebuiltMessage(cacheFile, damage));
    try {
      return new Catalog(sortEntries(await readEntries(repository, ids, db, options)));
    } catch (error) {
      if (!isDamage(error)) throw error;
      db.close();
      removeCache(cacheFile);
      options.onCacheRebuilt?.(cacheRebuiltMessage(cacheFile, messageOf(error)));
      return new Catalog(sortEntries(await readEntries(repository, ids, null, options)));
    } finally {
      if (db.open) db.close();
    }
  }

  /** Every set, oldest first. */
  all(): readonly CatalogEntry[] {
    return this.entries;
  }

  /** A set by its id, or by a unique prefix of its id or manifest id; `latest` is the newest. */
  find(ref: string): CatalogEntry | null {
    if (ref === 'latest') return this.entries.at(-1) ?? null;
    const exact = this.entries.find((e) => e.setId === ref || e.manifestId === ref);
    if (exact) return exact;
    const matches = this.entries.filter((e) => e.setId.startsWith(ref) || e.manifestId.startsWith(ref));
    return matches.length === 1 ? matches[0]! : null;
  }

  /**
   * The set a new backup of a component builds on, and the stamp to pass back:
   * incremental: the last succeeded full or incremental (the writer's history); differential:
   * the last succeeded full. Copy and differential sets never move a chain.
   */
  baseFor(
    writer: string,
    component: string,
    type: BackupType,
  ): { entry: CatalogEntry; record: ComponentRecord } | null {
    const wanted: BackupType[] =
      type === 'incremental' ? ['full', 'incremental'] : type === 'differential' ? ['full'] : [];
    if (wanted.length === 0) return null;
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const entry = this.entries[i]!;
      const record = entry.meta.components.find((c) => c.writer === writer && c.component === component);
      if (record && record.succeeded && record.stamp !== null && wanted.includes(record.actualType))
        return { entry, record };
    }
    return null;
  }

  /** The newest set holding a component or path, whatever its type: the parent for change detection. */
  latestWith(predicate: (entry: CatalogEntry) => boolean): CatalogEntry | null {
    for (let i = this.entries.length - 1; i >= 0; i--) if (predicate(this.entries[i]!)) return this.entries[i]!;
    return null;
  }
}

async function readEntries(
  repository: CatalogRepository,
  ids: ReadonlySet<string>,
  cache: Database.Database | null,
  options: CallOptions,
): Promise<CatalogEntry[]> {
  const entries: CatalogEntry[] = [];
  const cached = new Map<string, string>();
  if (cache) {
    for (const row of cache
      .prepare('SELECT manifest_id, envelope FROM manifests WHERE repository_id = ?')
      .all(repository.id) as { manifest_id: string; envelope: string }[]) {
      cached.set(row.manifest_id, row.envelope);
    }
  }
  const insert = cache?.prepare(
    'INSERT OR REPLACE INTO manifests (repository_id, manifest_id, envelope) VALUES (?, ?, ?)',
  );
  for (const id of ids) {
    let envelope: ManifestEnvelope | null = null;
    const hit = cached.get(id);
    if (hit !== undefined) {
      try {
        envelope = JSON.parse(hit) as ManifestEnvelope;
      } catch {
        envelope = null;
      }
    }
    envelope ??= await repository.loadManifest(id, options);
    if (hit === undefined) insert?.run(repository.id, id, JSON.stringify(envelope));
    const meta = BackupMetaSchema.safeParse(envelope.meta);
    if (!meta.success) continue; // a manifest of another kind: not a backup set
    entries.push({ manifestId: id, setId: envelope.setId, time: envelope.time, tree: envelope.tree, meta: meta.data });
  }
  if (cache) {
    const remove = cache.prepare('DELETE FROM manifests WHERE repository_id = ? AND manifest_id = ?');
    for (const id of cached.keys()) if (!ids.has(id)) remove.run(repository.id, id);
  }
  return entries;
}

function sortEntries(entries: CatalogEntry[]): CatalogEntry[] {
  return entries.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.setId < b.setId ? -1 : 1));
}
