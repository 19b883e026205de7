import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { QuiesceError, type CallOptions } from '../model/index.ts';
import { processStart, recordedProcessAlive } from '../util/index.ts';
import type { Backend } from './backend/backend.ts';
import { tryOpenSealed, seal } from './crypto/seal.ts';
import { isNotFound, storageError } from './storage-error.ts';
import type { RepositoryLock } from './repository-api.ts';

/**
 * Locks live in `locks`, one sealed JSON object each, under a random name:
 *   {"kind":"shared","hostname":"db1","pid":4242,"time":"…","refreshed":"…"}
 *
 * Backends have no conditional writes, so taking a lock is restic's dance: look for conflicts,
 * write ours, list again, and back off (remove ours, fail with `locked`) if a conflicting live
 * lock appeared meanwhile. Two racing lockers may both back off; neither ever proceeds alongside
 * the other.
 *
 * A lock is stale, and ignored, when its process is gone (same host, pid not alive) or when it
 * was not refreshed for `staleMs`. Exclusive lockers remove stale locks. Held locks are
 * refreshed every `refreshMs`.
 */
export const LockRecordSchema = z.object({
  kind: z.enum(['shared', 'exclusive']),
  hostname: z.string(),
  pid: z.number().int(),
  /** When that process started (`processStart`): a reused pid is not the locker. Absent in older locks. */
  start: z.string().max(128).nullish(),
  time: z.string(),
  refreshed: z.string(),
});
export type LockRecord = z.infer<typeof LockRecordSchema>;
export type LockKind = LockRecord['kind'];

export interface LockOptions {
  refreshMs?: number;
  staleMs?: number;
}

export const DEFAULT_LOCK_REFRESH_MS = 5 * 60_000;
export const DEFAULT_LOCK_STALE_MS = 30 * 60_000;

interface FoundLock {
  name: string;
  record: LockRecord | null;
}

export class Locker {
  private readonly refreshMs: number;
  private readonly staleMs: number;
  private readonly host = hostname();

  constructor(
    private readonly backend: Backend,
    private readonly key: Uint8Array,
    options: LockOptions = {},
  ) {
    this.refreshMs = options.refreshMs ?? DEFAULT_LOCK_REFRESH_MS;
    this.staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
  }

  isStale(record: LockRecord, now = Date.now()): boolean {
    if (record.hostname === this.host && !recordedProcessAlive(record.pid, record.start)) return true;
    const refreshed = Date.parse(record.refreshed);
    return !Number.isFinite(refreshed) || now - refreshed > this.staleMs;
  }

  /** Every lock object; one that cannot be read (another repository's, garbage) has no record. */
  async list(options: CallOptions = {}): Promise<FoundLock[]> {
    const found: FoundLock[] = [];
    for await (const info of this.backend.list('locks', options)) {
      let bytes: Buffer;
      try {
        bytes = await this.backend.load('locks', info.name, options);
      } catch (error) {
        // Removed between list and load: a released lock.
        if (isNotFound(error)) continue;
        throw error;
      }
      let record: LockRecord | null = null;
      const plain = tryOpenSealed(this.key, bytes);
      if (plain !== null) {
        try {
          record = LockRecordSchema.parse(JSON.parse(plain.toString('utf8')));
        } catch {
          record = null;
        }
      }
      found.push({ name: info.name, record });
    }
    return found;
  }

  private conflicts(kind: LockKind, found: FoundLock[], own?: string): FoundLock[] {
    const now = Date.now();
    return found.filter(
      (f) =>
        f.name !== own &&
        f.record !== null &&
        !this.isStale(f.record, now) &&
        (kind === 'exclusive' || f.record.kind === 'exclusive'),
    );
  }

  private lockedError(kind: LockKind, conflicts: FoundLock[]): QuiesceError {
    const first = conflicts[0]!.record!;
    const more = conflicts.length > 1 ? ` (and ${conflicts.length - 1} more)` : '';
    return new QuiesceError(
      'locked',
      `the repository at ${this.backend.location} is locked: ${withArticle(first.kind)} lock by pid ${first.pid} on ${first.hostname} since ${first.time}` +
        `${more} stands in the way of ${withArticle(kind)} lock. Wait for that run to finish; a lock whose process is gone is ignored after ${Math.round(this.staleMs / 60_000)} minutes`,
    );
  }

  private encode(record: LockRecord): Buffer {
    return seal(this.key, Buffer.from(JSON.stringify(record), 'utf8'));
  }

  /** Takes a lock or fails at once with `locked`; never waits. */
  async lock(kind: LockKind, options: CallOptions = {}): Promise<RepositoryLock> {
    const before = await this.list(options);
    const early = this.conflicts(kind, before);
    if (early.length > 0) throw this.lockedError(kind, early);
    if (kind === 'exclusive') {
      const now = Date.now();
      for (const f of before)
        if (f.record === null || this.isStale(f.record, now)) await this.backend.remove('locks', f.name, options);
    }
    const name = randomBytes(32).toString('hex');
    const time = new Date().toISOString();
    const record: LockRecord = {
      kind,
      hostname: this.host,
      pid: process.pid,
      start: processStart(process.pid),
      time,
      refreshed: time,
    };
    try {
      await this.backend.save('locks', name, this.encode(record), options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
    try {
      const late = this.conflicts(kind, await this.list(options), name);
      if (late.length > 0) throw this.lockedError(kind, late);
    } catch (error) {
      await this.backend.remove('locks', name).catch(() => undefined);
      throw error;
    }
    return this.held(name, record);
  }

  private held(name: string, record: LockRecord): RepositoryLock {
    let released = false;
    let refreshing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      refreshing = this.backend
        .save('locks', name, this.encode({ ...record, refreshed: new Date().toISOString() }))
        .catch(() => {
          // A failed refresh is retried at the next tick; after staleMs others may ignore the lock.
        });
    }, this.refreshMs);
    timer.unref();
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      clearInterval(timer);
      await refreshing;
      await this.backend.remove('locks', name);
    };
    return { release, [Symbol.asyncDispose]: release };
  }
}

/** A lock kind with its article: "a shared", "an exclusive". */
function withArticle(kind: LockKind): string {
  return kind === 'exclusive' ? 'an exclusive' : 'a shared';
}
