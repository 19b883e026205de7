import type { CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import type { RepositoryKeys } from './crypto/keys.ts';
import type { Repository } from './repository-api.ts';

/** What check and prune need beyond the public Repository: the keys and the pack settings. */
export interface RepositoryInternals {
  readonly repo: Repository;
  readonly backend: Backend;
  readonly keys: RepositoryKeys;
  readonly packSize: number;
  /** Re-reads the config and proves it opens with the repository's keys. */
  verifyConfig(options?: CallOptions): Promise<void>;
  /** Re-reads every index object into the blob index, forgetting this session's packs (a prune rewrote the index). */
  reloadAfterPrune(options?: CallOptions): Promise<void>;
}
