/**
 * Self-signed identities for the agent wire, made with the openssl command (Debian's openssl):
 * an EC P-256 key and a ten-year certificate that is its own CA, so that pinning it is all the
 * trust the other end needs.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { QuiesceError } from '../model/index.ts';
import { isErrno } from '../util/index.ts';
import { certificateFingerprint, type TlsIdentity } from './agent-wire.ts';

const execFileAsync = promisify(execFile);

export interface IdentityFiles {
  key: string;
  cert: string;
  fingerprint: string;
}

/**
 * Make `<dir>/<base>.key` (mode 0600) and `<dir>/<base>.crt` for `name`. Refuses to replace an
 * existing key: a new key breaks every pin of the old certificate.
 */
export async function makeIdentity(dir: string, base: string, name: string): Promise<IdentityFiles> {
  const key = join(dir, `${base}.key`);
  const cert = join(dir, `${base}.crt`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    await readFile(key);
    throw new QuiesceError(
      'bad-usage',
      `${key} exists; remove it first if you really want a new identity (every host that pinned the old certificate must pin the new one)`,
    );
  } catch (error) {
    if (error instanceof QuiesceError) throw error;
  }
  const tmpKey = `${key}.tmp`;
  const tmpCert = `${cert}.tmp`;
  const subject = `/CN=${name.replace(/[/=\\]/g, '_')}`;
  try {
    await execFileAsync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-sha256',
        '-keyout',
        tmpKey,
        '-out',
        tmpCert,
        '-days',
        '3650',
        '-subj',
        subject,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'subjectAltName=DNS:quiesce-agent',
      ],
      { env: { PATH: '/usr/bin:/bin:/usr/local/bin', OPENSSL_CONF: '/dev/null' } },
    );
  } catch (error) {
    const missing = isErrno(error, 'ENOENT');
    throw new QuiesceError(
      'bad-config',
      missing
        ? 'the openssl command is missing: install openssl'
        : `openssl failed: ${(error as { stderr?: string }).stderr ?? String(error)}`,
      { cause: error },
    );
  }
  await chmod(tmpKey, 0o600);
  await rename(tmpCert, cert);
  await rename(tmpKey, key);
  return { key, cert, fingerprint: certificateFingerprint(await readFile(cert)) };
}

/** Read a key and certificate; errors name the file. */
export async function loadIdentity(files: { key: string; cert: string }): Promise<TlsIdentity> {
  const [key, cert] = await Promise.all([readPem(files.key, 'key'), readPem(files.cert, 'certificate')]);
  certificateFingerprint(cert);
  return { key, cert };
}

export async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new QuiesceError(
      'bad-config',
      `cannot read the ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      { cause: error },
    );
  }
}
