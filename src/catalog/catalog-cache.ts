import Database from 'better-sqlite3';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { messageOf } from '../util/index.ts';

/** The catalog's cache file, open; `damage` says why a damaged file it found was removed (null: none was). */
export interface OpenedCache {
  db: Database.Database;
  damage: string | null;
}

/** SQLite errors that say the file is fine but taken (another process): never a reason to remove it. */
const BUSY = new Set(['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_CANTOPEN', 'SQLITE_READONLY', 'SQLITE_PERM']);

/**
 * Opens the catalog's cache file, proving it first: it opens, passes `PRAGMA quick_check`, and
 * has the one table with its columns. A file that fails (truncated, garbage, zeroed, another
 * schema) is only a cache: it is removed with its WAL and a new one made in its place, and
 * `damage` says why.
 */
export function openCatalogCache(file: string): OpenedCache {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  try {
    return { db: openChecked(file), damage: null };
  } catch (error) {
    if (!isDamage(error)) throw error;
    removeCache(file);
    return { db: openChecked(file), damage: messageOf(error) };
  }
}

/**
 * Proves the cache file before a command uses it, replacing a damaged one: answers the line to
 * tell the user once (null when the file was sound or absent).
 */
export function proveCatalogCache(file: string): string | null {
  const { db, damage } = openCatalogCache(file);
  db.close();
  return damage === null ? null : cacheRebuiltMessage(file, damage);
}

/** Is this error a sign of a damaged cache file (and not of a cache that is busy or unreadable)? */
export function isDamage(error: unknown): boolean {
  if (!(error instanceof Database.SqliteError)) return error instanceof CacheShapeError;
  return !BUSY.has(error.code);
}

/** Removes a cache file and its WAL and shared-memory files. */
export function removeCache(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${file}${suffix}`, { force: true });
}

/** The line a user reads once when a damaged cache was replaced. */
export function cacheRebuiltMessage(file: string, damage: string): string {
  return `the catalog cache ${file} was damaged (${damage}): removed it; it is rebuilt from the repository's manifests`;
}

class CacheShapeError extends Error {}

function openChecked(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 5000');
    db.pragma('journal_mode = WAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new CacheShapeError(`quick_check: ${String(check)}`);
    db.exec(
      'CREATE TABLE IF NOT EXISTS manifests (repository_id TEXT NOT NULL, manifest_id TEXT NOT NULL, envelope TEXT NOT NULL, PRIMARY KEY (repository_id, manifest_id))',
    );
    db.prepare('SELECT repository_id, manifest_id, envelope FROM manifests LIMIT 1').all();
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
