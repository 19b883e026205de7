import { QuiesceError, type CallOptions } from '../model/index.ts';
import type { Backend } from './backend/backend.ts';
import { addKey, listKeyFiles, type KdfParams, type KeyInfo } from './crypto/keys.ts';
import { storageError } from './storage-error.ts';

/** A key file, and whether this session's password opened it. */
export type SessionKeyInfo = KeyInfo & { current: boolean };

/**
 * The repository's key files, as this session sees them: the master secret it opened, and the
 * key file its password opened (`keyName`), which it never removes.
 */
export class KeyRing {
  constructor(
    private readonly backend: Backend,
    private readonly master: Buffer,
    /** The key file this session's password opened. */
    private readonly keyName: string,
    private readonly kdf: KdfParams,
  ) {}

  /** Seals the master key under another password, in a key file of its own; answers its id. */
  async addPassword(password: string, options: CallOptions = {}): Promise<string> {
    try {
      return await addKey(this.backend, this.master, password, this.kdf, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
  }

  async listKeys(options: CallOptions = {}): Promise<SessionKeyInfo[]> {
    try {
      return (await listKeyFiles(this.backend, options)).map((key) => ({ ...key, current: key.id === this.keyName }));
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
  }

  /** Removes the key file `id` names (the whole id, or a unique prefix of 8 or more); answers its id. */
  async removeKey(id: string, options: CallOptions = {}): Promise<string> {
    const key = this.keyToRemove(await this.listKeys(options), id);
    try {
      await this.backend.remove('keys', key.id, options);
    } catch (error) {
      throw storageError(error, this.backend.location);
    }
    return key.id;
  }

  private keyToRemove(keys: readonly SessionKeyInfo[], id: string): SessionKeyInfo {
    // Another session may have removed this session's key meanwhile: then removing any other
    // could leave none that opens.
    if (!keys.some((key) => key.current)) {
      throw new QuiesceError(
        'bad-usage',
        `the key this password opened is no longer in the repository at ${this.backend.location}; no key is removed`,
      );
    }
    const matches = id.length >= 8 ? keys.filter((key) => key.id.startsWith(id)) : keys.filter((key) => key.id === id);
    if (matches.length === 0)
      throw new QuiesceError(
        'bad-usage',
        `the repository at ${this.backend.location} has no key ${id} (quiesce key list shows them)`,
      );
    if (matches.length > 1)
      throw new QuiesceError('bad-usage', `${id} names ${matches.length} keys; give more of the id`);
    const key = matches[0]!;
    // The key this session opened with always stays, so the repository always keeps a key that opens.
    if (key.current) {
      throw new QuiesceError(
        'bad-usage',
        `key ${key.id.slice(0, 12)} is the one this password opens: to remove it, give another password (--password-file) whose key stays`,
      );
    }
    return key;
  }
}
