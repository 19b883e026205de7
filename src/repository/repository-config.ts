import { z } from 'zod';
import { QuiesceError } from '../model/index.ts';
import { openSealed, seal } from './crypto/seal.ts';

/**
 * The `config` object: a plain prefix that says "quiesce, format 1", then the sealed JSON of
 * the repository's settings. The prefix lets `open` tell a foreign object or a newer format
 * from a wrong password before it spends time on scrypt.
 *
 *   "QSCE" || u8 format (1) || seal({"version":1,"id":"…","chunker":{…},"compression":{…}})
 */
const MAGIC = Buffer.from('QSCE', 'latin1');
/** The one object the config is stored as. */
export const CONFIG_NAME = 'config';

export const CONFIG_FORMAT = 1;

export const RepositoryConfigSchema = z.object({
  version: z.number().int().positive(),
  id: z.string().regex(/^[0-9a-f]{64}$/),
  chunker: z.object({
    minSize: z.number().int().positive(),
    avgSize: z.number().int().positive(),
    maxSize: z.number().int().positive(),
  }),
  compression: z.object({ algorithm: z.literal('zstd'), level: z.number().int().min(-7).max(22) }),
});
export type RepositoryConfig = z.infer<typeof RepositoryConfigSchema>;

export function encodeConfig(key: Uint8Array, config: RepositoryConfig): Buffer {
  return Buffer.concat([MAGIC, Buffer.of(CONFIG_FORMAT), seal(key, Buffer.from(JSON.stringify(config), 'utf8'))]);
}

/** Checks the plain prefix: not quiesce's -> `not-a-repository`; a newer format -> `unsupported-version`. */
export function checkConfigPrefix(bytes: Uint8Array, location: string): void {
  if (bytes.length < MAGIC.length + 1 || !MAGIC.equals(bytes.subarray(0, MAGIC.length))) {
    throw new QuiesceError(
      'not-a-repository',
      `${location} has a config that is not a quiesce repository's: point --repo at a quiesce repository, or run quiesce init on an empty location`,
    );
  }
  const format = bytes[MAGIC.length]!;
  if (format > CONFIG_FORMAT) {
    throw new QuiesceError(
      'unsupported-version',
      `the repository at ${location} has format ${format}; this quiesce reads format ${CONFIG_FORMAT}: upgrade quiesce`,
    );
  }
}

/** The sealed part of a config object (after the plain prefix). */
export function sealedConfig(bytes: Uint8Array): Uint8Array {
  return bytes.subarray(MAGIC.length + 1);
}

/** Opens the sealed settings with the repository's key (already unlocked by a password). */
export function decodeConfig(key: Uint8Array, bytes: Uint8Array, location: string): RepositoryConfig {
  checkConfigPrefix(bytes, location);
  let raw: unknown;
  try {
    raw = JSON.parse(openSealed(key, sealedConfig(bytes), 'config').toString('utf8'));
  } catch (error) {
    throw new QuiesceError(
      'not-a-repository',
      `the config of the repository at ${location} is unreadable (damaged, or it belongs to other keys): it cannot be opened`,
      { cause: error },
    );
  }
  const version = (raw as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version > 1) {
    throw new QuiesceError(
      'unsupported-version',
      `the repository at ${location} has version ${version}; this quiesce reads version 1: upgrade quiesce`,
    );
  }
  const parsed = RepositoryConfigSchema.safeParse(raw);
  if (!parsed.success || parsed.data.version !== 1) {
    throw new QuiesceError(
      'not-a-repository',
      `the config of the repository at ${location} is not valid: ${parsed.success ? 'bad version' : (parsed.error.issues[0]?.message ?? 'invalid')}`,
    );
  }
  return parsed.data;
}
