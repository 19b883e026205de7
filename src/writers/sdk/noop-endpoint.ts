import type { WriterEndpoint, WriterMetadata } from '../../model/index.ts';

/**
 * A writer endpoint that does nothing: every phase succeeds at once and holds nothing, `thaw`
 * says it was never frozen, and nothing is kept between calls. It is the base for endpoints that
 * quiesce nothing themselves (a guest with no agent, a test's idle writer); spread it and replace
 * the calls that must answer more.
 *
 * @example
 * const idle = createNoopEndpoint(metadata);
 * const crashOnly: WriterEndpoint = { ...idle, thaw: async () => ({ selfThawed: false, frozenMs: 0, consistency: 'crash' }) };
 */
export function createNoopEndpoint(metadata: WriterMetadata): WriterEndpoint {
  return {
    identify: async () => metadata,
    status: async () => ({ metadata, state: 'stable', setId: null, lastFailure: null }),
    prepareBackup: async () => ({ components: [] }),
    prepareSnapshot: async () => undefined,
    freeze: async () => undefined,
    thaw: async () => ({ selfThawed: false, frozenMs: 0 }),
    postSnapshot: async () => ({ components: [] }),
    backupComplete: async () => undefined,
    abort: async () => undefined,
    shutdown: async () => undefined,
    preRestore: async () => undefined,
    postRestore: async () => undefined,
    openSession: async () => ({ close: async () => undefined }),
    close: async () => undefined,
  };
}
