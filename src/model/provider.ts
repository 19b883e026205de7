import type { CallOptions } from './call-options.ts';
import type { SnapshotPath } from './messages.ts';
import type { SnapshotLevel } from './consistency.ts';

export const PROVIDER_NAMES = ['btrfs', 'reflink', 'fsfreeze', 'copy'] as const;
/**
 * The providers a config may choose (`PROVIDER_NAMES`), and `host`: inside a guest, the snapshot
 * is its host's (of the disk images), and the guest's provider (`HeldFreezeProvider`) only holds
 * its file systems still meanwhile. `host` is in this union, though no config can choose it,
 * because the guest's own set runs on the same coordinator as any other: `Provider.name` and
 * `ProviderSnapshot.provider` (and so the set's report) need a name for it.
 */
export type ProviderName = (typeof PROVIDER_NAMES)[number] | 'host';

/** Whether a provider can take a path, and why not. */
export interface ProviderSupport {
  ok: boolean;
  /** Why not (or a note when ok), for `quiesce providers`. */
  reason: string;
  /** The consistency a snapshot by this provider has without any writer: `crash` or `filesystem`. */
  level: SnapshotLevel;
}

export interface ProviderSnapshotRequest {
  setId: string;
  /** Absolute, normalised original paths (files or directories) this provider must capture. */
  paths: string[];
  /** A directory this provider may use for its copies when it has no better place (the copy and fsfreeze providers). */
  stagingDir: string;
  /**
   * Files the requester already holds from an earlier set (an incremental's parent). A provider
   * that copies file by file need not copy a file whose size and mtime still match what is held:
   * it lists it in `ProviderSnapshot.unchanged` instead. Providers that snapshot whole file
   * systems at once (btrfs) ignore it.
   */
  known?: KnownFiles;
  /**
   * The writers run again: copy the paths as they are now and hold nothing still (the files of a
   * component marked `readableAfterThaw`). The fsfreeze provider then copies without freezing.
   */
  afterThaw?: boolean;
}

/** What a requester already holds of a file: its size and mtime then. */
export interface KnownFile {
  size: bigint;
  mtimeNs: bigint;
}

export interface KnownFiles {
  /**
   * The files held in one original directory, by name, or null when none are. Only files whose
   * content the requester can reuse as it is are listed (never a writer's component file).
   */
  inDirectory(originalDir: string, options?: CallOptions): Promise<ReadonlyMap<string, KnownFile> | null>;
}

/**
 * A file a provider left out of its snapshot because the requester holds it unchanged, or a
 * directory left out whole because it holds nothing else (`directory`: its entries are further
 * unchanged entries, with its would-be path as their `snapshotDir`).
 */
export interface UnchangedFile {
  /** The snapshot directory where the entry would have been (the other entries of the directory are there, or it was left out too). */
  snapshotDir: string;
  name: string;
  /** The original's metadata at the commit, its mtime cut to the microsecond as a copy keeps it (`copiedTimeNs`). */
  mode: number;
  uid: number;
  gid: number;
  /** 0 for a directory. */
  size: number;
  mtimeNs: string;
  directory?: true;
}

/**
 * What a set left on disk when its process died before releasing it: a snapshot that `release`
 * removes, the directories it holds, and their size as `du` counts it.
 */
export interface LeftoverSnapshot {
  snapshot: ProviderSnapshot;
  dirs: string[];
  bytes: number;
}

/** A taken snapshot; release it with `release`. */
export interface ProviderSnapshot {
  provider: ProviderName;
  setId: string;
  /** Where each original path can be read at the point in time. */
  paths: SnapshotPath[];
  /** Provider-private data needed to release (e.g. subvolumes created); JSON-serialisable, for --keep. */
  handle: unknown;
  /** Files left out because the request's `known` holds them unchanged (absent: none). */
  unchanged?: UnchangedFile[];
}

/**
 * A snapshot mechanism.
 *
 * Contract:
 * - `prepare` runs before the freeze and does the slow, side-effect-free checks; it may be skipped.
 * - `commit` runs while the writers are frozen: it must capture every path at one point in time
 *   and honour `signal` (the commit deadline). If it fails or is aborted it removes whatever it
 *   created before throwing.
 * - `release` is idempotent and never throws for an already-released snapshot.
 * - The snapshot paths are read-only in intent; a provider may enforce it (btrfs read-only snapshots).
 */
export interface Provider {
  readonly name: ProviderName;
  /**
   * True when one commit takes every path at one instant, however much data it holds (a btrfs
   * subvolume snapshot, a guest's held freeze): such a provider takes plain paths inside the
   * freeze too. Copy-based providers (copy, reflink, fsfreeze) leave it out.
   */
  readonly atomic?: boolean;
  supports(path: string, options?: CallOptions): Promise<ProviderSupport>;
  prepare(request: ProviderSnapshotRequest, options?: CallOptions): Promise<void>;
  commit(request: ProviderSnapshotRequest, options?: CallOptions): Promise<ProviderSnapshot>;
  release(snapshot: ProviderSnapshot, options?: CallOptions): Promise<void>;
  /**
   * What a set of this request (its id, paths and staging directory) left behind when its process
   * died, found by the set id where this provider puts its snapshots; null when nothing is there.
   */
  leftovers?(request: ProviderSnapshotRequest, options?: CallOptions): Promise<LeftoverSnapshot | null>;
}
