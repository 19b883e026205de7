// The backup repository: content-defined chunks, deduplicated by keyed id, compressed, sealed,
// gathered in packs with an index; manifests, locks, check and prune. Backends live in backend/.
export {
  initRepository,
  openRepository,
  DEFAULT_PACK_SIZE,
  DEFAULT_WORKERS,
  type OpenRepositoryOptions,
  type InitRepositoryOptions,
} from './open.ts';
export { DEFAULT_GRACE_MS, type PruneOptions, type PruneReport } from './prune.ts';
export type { CheckOptions, CheckProblem, CheckReport } from './check.ts';
export type { DroppedBlob, RepairIndexReport, RepairPacksReport } from './repair.ts';
export { DEFAULT_LOCK_REFRESH_MS, DEFAULT_LOCK_STALE_MS, type LockOptions } from './locks.ts';
export { DEFAULT_CHUNKER_PARAMS, type ChunkerParams } from './chunker/index.ts';
export { DEFAULT_KDF, type KdfParams } from './crypto/index.ts';
export { DEFAULT_COMPRESSION_LEVEL } from './compression.ts';
export {
  ManifestEnvelopeSchema,
  type BlobType,
  type SaveBlobOptions,
  type SaveBlobResult,
  type ManifestEnvelope,
  type RepositoryLock,
  type Repository,
  type ArchiverRepository,
  type RestorerRepository,
  type CatalogRepository,
  type Chunker,
} from './repository-api.ts';
export {
  TreeSchema,
  NodeSchema,
  NodeNameSchema,
  ContentRefSchema,
  type Tree,
  type TreeNode,
  type FileNode,
  type DirNode,
  type SymlinkNode,
  type SpecialNode,
  type ContentRef,
} from './tree.ts';
export {
  MAX_SET_ENTRIES,
  MAX_TREE_DEPTH,
  TreeMeasure,
  boundsProblem,
  shapeOf,
  type TreeShape,
  type TreeSize,
} from './tree-bounds.ts';
// Named file by file, not through backend/index.ts: that one loads the S3 backend, and with it the
// AWS SDK (0.3 s), which open-backend.ts imports only for an s3:// location.
export { BackendError, type Backend, type BackendErrorKind } from './backend/backend.ts';
export { FsBackend } from './backend/fs-backend.ts';
export { MemoryBackend } from './backend/memory-backend.ts';
export { RetryBackend } from './backend/retry-backend.ts';
export { openBackend, type OpenBackendOptions } from './backend/open-backend.ts';
