// The requester: backup (a snapshot set read into the repository), restore, and the tree
// walking both share. Composition of writers, providers and the repository happens in cli/.
export { runBackup, type BackupOptions, type BackupResult } from './backup.ts';
export { findNode } from './tree-nodes.ts';
export {
  archive,
  type ArchiveOptions,
  type ArchiveProgress,
  type ArchiveResult,
  type ArchiveSource,
  type PartialSource,
} from './archiver.ts';
export { prefetchMetadata } from './metadata-prefetch.ts';
export { restore, type RestoreOptions, type RestoreProgress, type RestoreResult } from './restorer.ts';
export { restoreSet, type RestoreSetOptions, type RestoreSetResult, type RestoreWriter } from './restore-set.ts';
