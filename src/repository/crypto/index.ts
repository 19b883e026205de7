// The repository's secrets: a master secret sealed under each password (scrypt key files), the
// keys derived from it (HKDF), and sealing of objects with AES-256-GCM.
export { seal, openSealed, tryOpenSealed, SEAL_OVERHEAD } from './seal.ts';
export {
  newMasterSecret,
  deriveKeys,
  blobIdOf,
  sha256Hex,
  createKeyFile,
  openKeyFile,
  addKey,
  openMasterSecret,
  DEFAULT_KDF,
  KeyFileSchema,
  type RepositoryKeys,
  type KdfParams,
  type KeyFile,
} from './keys.ts';
