import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { sha256Hex, type RepositoryKeys } from './crypto/keys.ts';
import { openSealed, seal } from './crypto/seal.ts';
import { ManifestEnvelopeSchema, type ManifestEnvelope } from './repository-api.ts';
import { isNotFound, storageError } from './storage-error.ts';

/**
 * The manifests of a repository: each sealed, and named by the hash of its sealed bytes, so a
 * manifest proves its own integrity before it is opened.
 */
export class Manifests {
  constructor(
    private readonly backend: Backend,
    private readonly keys: RepositoryKeys,
  ) {}

  /**
   * Stores a manifest once the data it names is stored: `hasBlob` answers for its root tree,
   * `flush` writes every pending pack and the index before the manifest is written.
   */
  async save(
    manifest: ManifestEnvelope,
    hasBlob: (id: string) => boolean,
    flush: (options: CallOptions) => Promise<void>,
    options: CallOptions,
  ): Promise<string> {
    const envelope = ManifestEnvelopeSchema.parse(manifest);
    if (!hasBlob(envelope.tree)) {
      throw new QuiesceError(
        'nonretryable',
        `the manifest of set ${envelope.setId} names tree ${envelope.tree}, which is not in the repository: save the tree first`,
      );
    }
    await flush(options);
    const bytes = seal(this.keys.encryption, Buffer.from(JSON.stringify(envelope), 'utf8'));
    const name = sha256Hex(bytes);
    try {
      await this.backend.save('manifests', name, bytes, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
    return name;
  }

  async load(id: string, options: CallOptions = {}): Promise<ManifestEnvelope> {
    let bytes: Buffer;
    try {
      bytes = await this.backend.load('manifests', id, options);
    } catch (error) {
      if (isNotFound(error))
        throw new QuiesceError(
          'bad-usage',
          `there is no manifest ${id} in the repository at ${this.backend.location}`,
          { cause: error },
        );
      throw error;
    }
    return this.open(id, bytes);
  }

  /** A manifest's bytes, proved to be the manifest `id` names and parsed. */
  private open(id: string, bytes: Buffer): ManifestEnvelope {
    const what = `manifest ${id}`;
    if (sha256Hex(bytes) !== id)
      throw new QuiesceError('damaged', `${what} is damaged: its content does not match its name`);
    const plain = openSealed(this.keys.encryption, bytes, what);
    let parsed;
    try {
      parsed = ManifestEnvelopeSchema.safeParse(JSON.parse(plain.toString('utf8')));
    } catch (error) {
      throw new QuiesceError('damaged', `${what} is damaged: it is not JSON`, { cause: error });
    }
    if (!parsed.success)
      throw new QuiesceError(
        'damaged',
        `${what} is not a valid manifest: ${parsed.error.issues[0]?.message ?? 'invalid'}`,
      );
    return parsed.data;
  }

  async list(options: CallOptions = {}): Promise<string[]> {
    const names: string[] = [];
    for await (const info of this.backend.list('manifests', options)) names.push(info.name);
    return names.sort();
  }

  async remove(id: string, options: CallOptions = {}): Promise<void> {
    await this.backend.remove('manifests', id, options);
  }
}
