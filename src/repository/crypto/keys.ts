import { createHash, createHmac, hkdfSync, randomBytes, scrypt } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { QuiesceError, type CallOptions } from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';
import type { Backend } from '../backend/backend.ts';
import { seal, tryOpenSealed } from './seal.ts';

/**
 * The keys of one repository, all derived (HKDF-SHA256) from its random 32-byte master secret,
 * which only ever leaves memory sealed under a password in a key file.
 */
export interface RepositoryKeys {
  /** AES-256-GCM key for every sealed object. */
  readonly encryption: Buffer;
  /** HMAC-SHA256 key naming blobs: a blob id reveals nothing about its content. */
  readonly mac: Buffer;
  /** Seed of the chunker's gear table: chunk boundaries reveal nothing either. */
  readonly chunkerSeed: Buffer;
}

const HKDF_SALT = Buffer.from('quiesce repository v1');

export function newMasterSecret(): Buffer {
  return randomBytes(32);
}

export function deriveKeys(master: Uint8Array): RepositoryKeys {
  const derive = (info: string): Buffer => Buffer.from(hkdfSync('sha256', master, HKDF_SALT, info, 32));
  return { encryption: derive('encryption'), mac: derive('blob id'), chunkerSeed: derive('chunker') };
}

/** A blob's id: HMAC-SHA256 of its plaintext under the repository's MAC key, lowercase hex. */
export function blobIdOf(keys: RepositoryKeys, plaintext: Uint8Array): string {
  return createHmac('sha256', keys.mac).update(plaintext).digest('hex');
}

/** SHA-256 of stored bytes, lowercase hex: the name of every content-named object. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface KdfParams {
  /** scrypt cost, a power of two. */
  N: number;
  r: number;
  p: number;
}

/** About 0.1 s and 32 MiB per password try on this hardware. Tests use a small N. */
export const DEFAULT_KDF: KdfParams = { N: 2 ** 15, r: 8, p: 1 };

/** What a key file may ask of us before we refuse it: 1 GiB of scrypt memory. */
const MAX_SCRYPT_MEMORY = 2 ** 30;

/** nonce (12) || AES-256-GCM of the 32-byte master secret || tag (16). */
const SEALED_MASTER_LENGTH = 12 + 32 + 16;

const KdfParamsSchema = z.object({
  N: z
    .number()
    .int()
    .min(2)
    .refine((n) => (n & (n - 1)) === 0, 'N is a power of two'),
  r: z.number().int().min(1).max(64),
  p: z.number().int().min(1).max(16),
});

export const KeyFileSchema = z.object({
  version: z.literal(1),
  kdf: z.literal('scrypt'),
  ...KdfParamsSchema.shape,
  salt: z.string().base64(),
  created: z.string(),
  hostname: z.string(),
  /** base64(seal(scrypt(password), masterSecret)). */
  data: z.string().base64(),
});
export type KeyFile = z.infer<typeof KeyFileSchema>;

function scryptMemory(params: KdfParams): number {
  return 128 * params.N * params.r + 128 * params.r * params.p;
}

function passwordKey(password: string, salt: Uint8Array, params: KdfParams, options: CallOptions): Promise<Buffer> {
  if (scryptMemory(params) > MAX_SCRYPT_MEMORY) {
    return Promise.reject(
      new QuiesceError('damaged', `key parameters N=${params.N} r=${params.r} need more than 1 GiB`),
    );
  }
  options.signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    // scrypt refuses some parameters within the memory bound (N=2^16 with r=1) with a RangeError, thrown at once.
    try {
      scrypt(
        Buffer.from(password.normalize('NFC'), 'utf8'),
        salt,
        32,
        { N: params.N, r: params.r, p: params.p, maxmem: 2 * scryptMemory(params) + 2 ** 20 },
        (error, key) => (error === null ? resolve(key) : reject(invalidParams(params, error))),
      );
    } catch (error) {
      reject(invalidParams(params, error));
    }
  });
}

function invalidParams(params: KdfParams, cause: unknown): QuiesceError {
  return new QuiesceError(
    'damaged',
    `key parameters N=${params.N} r=${params.r} p=${params.p} are not valid for scrypt (${messageOf(cause)})`,
    { cause },
  );
}

/** A key file sealing `master` under `password`; its object name is the SHA-256 of its bytes. */
export async function createKeyFile(
  master: Uint8Array,
  password: string,
  params: KdfParams = DEFAULT_KDF,
  options: CallOptions = {},
): Promise<{ name: string; bytes: Buffer }> {
  KdfParamsSchema.parse(params);
  const salt = randomBytes(32);
  const key = await passwordKey(password, salt, params, options);
  const file: KeyFile = {
    version: 1,
    kdf: 'scrypt',
    N: params.N,
    r: params.r,
    p: params.p,
    salt: salt.toString('base64'),
    created: new Date().toISOString(),
    hostname: hostname(),
    data: seal(key, master).toString('base64'),
  };
  const bytes = Buffer.from(JSON.stringify(file), 'utf8');
  return { name: sha256Hex(bytes), bytes };
}

/** The master secret in a key file if `password` opens it; null if not (or if it is no key file). */
export async function openKeyFile(
  bytes: Uint8Array,
  password: string,
  options: CallOptions = {},
): Promise<Buffer | null> {
  const result = await tryKeyFile(bytes, password, options);
  return 'master' in result ? result.master : null;
}

/**
 * What a key file holds for `password`: its master secret, or why not: `damaged` (it is not a
 * well-formed key file: not JSON, a field missing or of a bad length, KDF parameters out of
 * range), or `wrong` (a well-formed key file the password does not open).
 */
export async function tryKeyFile(
  bytes: Uint8Array,
  password: string,
  options: CallOptions = {},
): Promise<{ master: Buffer } | { damaged: string } | { wrong: true }> {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { damaged: bytes.length === 0 ? 'it is empty' : 'it is not valid JSON' };
  }
  const parsed = KeyFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      damaged: `it is not a valid key file (${issue?.path.join('.') || 'the file'}: ${issue?.message ?? 'invalid'})`,
    };
  }
  const file = parsed.data;
  if (scryptMemory(file) > MAX_SCRYPT_MEMORY)
    return { damaged: `its KDF parameters N=${file.N} r=${file.r} need more than 1 GiB` };
  const salt = Buffer.from(file.salt, 'base64');
  const data = Buffer.from(file.data, 'base64');
  // A key file always holds a 32-byte salt and a sealed 32-byte secret (12 + 32 + 16 bytes).
  if (salt.length !== 32) return { damaged: `its salt is ${salt.length} bytes, not 32` };
  if (data.length !== SEALED_MASTER_LENGTH)
    return { damaged: `its sealed key is ${data.length} bytes, not ${SEALED_MASTER_LENGTH}` };
  let key: Buffer;
  try {
    key = await passwordKey(password, salt, file, options);
  } catch (error) {
    // Parameters scrypt refuses (N=2^16 with r=1): no key file of ours.
    if (error instanceof QuiesceError && error.code === 'damaged')
      return { damaged: `its KDF parameters N=${file.N} r=${file.r} are refused by scrypt` };
    throw error;
  }
  const master = tryOpenSealed(key, data);
  return master !== null && master.length === 32 ? { master } : { wrong: true };
}

/** Seals `master` under another password and stores the key file; answers its name. */
export async function addKey(
  backend: Backend,
  master: Uint8Array,
  password: string,
  params: KdfParams = DEFAULT_KDF,
  options: CallOptions = {},
): Promise<string> {
  const { name, bytes } = await createKeyFile(master, password, params, options);
  await backend.save('keys', name, bytes, options);
  return name;
}

/** What a key file says of itself without its password: when and where it was made. */
export interface KeyInfo {
  /** The key file's object name (the SHA-256 of its bytes). */
  id: string;
  /** ISO time and host name of its making, or null for a file that is not a key file. */
  created: string | null;
  hostname: string | null;
}

/** Every key file of the repository, with what it says of itself. */
export async function listKeyFiles(backend: Backend, options: CallOptions = {}): Promise<KeyInfo[]> {
  const keys: KeyInfo[] = [];
  for await (const info of backend.list('keys', options)) {
    let file: KeyFile | null = null;
    try {
      file = KeyFileSchema.parse(JSON.parse((await backend.load('keys', info.name, options)).toString('utf8')));
    } catch (error) {
      if (error instanceof QuiesceError) throw error;
      file = null;
    }
    keys.push({ id: info.name, created: file?.created ?? null, hostname: file?.hostname ?? null });
  }
  return keys.sort((a, b) => (a.created ?? '').localeCompare(b.created ?? '') || a.id.localeCompare(b.id));
}

/**
 * Tries every key file of the repository with `password`, answering the first master secret
 * that `accept` takes (the caller checks it opens the config: a key left by a crashed `init`
 * may open with the same password yet belong to no repository).
 * Throws `wrong-password` when no intact key opens (naming the damaged ones, if any); `damaged`
 * when every key file is damaged; `not-a-repository` when keys open but none is accepted.
 */
export async function openMasterSecret(
  backend: Backend,
  password: string,
  accept: (master: Buffer) => boolean = () => true,
  options: CallOptions = {},
): Promise<{ master: Buffer; keyName: string }> {
  let tried = 0;
  let opened = 0;
  const damaged: string[] = [];
  for await (const info of backend.list('keys', options)) {
    tried += 1;
    const bytes = await backend.load('keys', info.name, options);
    const result = await tryKeyFile(bytes, password, options);
    if ('master' in result) {
      opened += 1;
      if (accept(result.master)) return { master: result.master, keyName: info.name };
      if (sha256Hex(bytes) !== info.name)
        damaged.push(
          `key file keys/${info.name} no longer hashes to its name: it was replaced (by a key of another repository?)`,
        );
      continue;
    }
    // A key file is named by the SHA-256 of its bytes: one that no longer hashes to its name
    // was changed after it was written, whatever the password.
    const reason =
      'damaged' in result
        ? result.damaged
        : sha256Hex(bytes) !== info.name
          ? 'its bytes no longer match its name (SHA-256)'
          : null;
    if (reason !== null) damaged.push(`key file keys/${info.name} is damaged: ${reason}`);
  }
  throw noKeyOpens(backend.location, tried, opened, damaged);
}

function noKeyOpens(location: string, tried: number, opened: number, damaged: readonly string[]): QuiesceError {
  if (tried === 0) {
    return new QuiesceError(
      'not-a-repository',
      `the repository at ${location} has no key: it is not a quiesce repository, or its keys were removed`,
    );
  }
  if (opened > 0) {
    return new QuiesceError(
      'not-a-repository',
      `the config of the repository at ${location} is unreadable (damaged, or written with other keys): it cannot be opened${damaged.length > 0 ? `; ${damaged.join('; ')}` : ''}`,
    );
  }
  if (damaged.length === tried) {
    return new QuiesceError(
      'damaged',
      `no key of the repository at ${location} can be opened: ${damaged.join('; ')}. Put the key files back from a copy of the repository (any password then opens its own)`,
    );
  }
  const also =
    damaged.length === 0
      ? ''
      : `; and ${damaged.join('; ')} (it may be the one this password opened: put it back from a copy)`;
  return new QuiesceError(
    'wrong-password',
    `the password does not open any key of the repository at ${location}${also}`,
  );
}
