// The file-system calls Node lacks, from our own small addon (native/fs-meta.c, built by
// node-gyp at `npm ci`): utimensat to the nanosecond (libuv's utimes keeps microseconds) and
// mknod (FIFOs, devices). Without the addon (a checkout never built) times fall back to
// microseconds and special files cannot be made; a process warning says so, once.
import { lutimes, utimes } from 'node:fs/promises';
import { createRequire } from 'node:module';

interface Addon {
  utimensat(path: string | Buffer, atimeNs: bigint, mtimeNs: bigint, noFollow: boolean): void;
  mknod(path: string | Buffer, mode: number, dev: bigint | number): void;
}

/** Where the addon lies from src/util/ (run through tsx) and from dist/ (the bundle). */
const CANDIDATES = ['../../build/Release/fs_meta.node', '../build/Release/fs_meta.node'];

let loaded: { addon: Addon | null; reason?: string } | undefined;

function load(): Addon | null {
  if (loaded !== undefined) return loaded.addon;
  const require = createRequire(import.meta.url);
  let reason = 'not built';
  for (const candidate of CANDIDATES) {
    try {
      loaded = { addon: require(new URL(candidate, import.meta.url).pathname) as Addon };
      return loaded.addon;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code !== 'MODULE_NOT_FOUND') reason = error instanceof Error ? error.message : String(error);
    }
  }
  loaded = { addon: null, reason };
  return null;
}

let warned = false;
function warnMissing(what: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    `the native file-system addon (build/Release/fs_meta.node) is ${loaded?.reason ?? 'not built'}: ${what}; build it with \`npm ci\` or \`npx node-gyp rebuild\``,
    { code: 'QUIESCE_NO_NATIVE_FS' },
  );
}

/** Is the addon there: times kept to the nanosecond, special files made? */
export function nativeFsAvailable(): boolean {
  return load() !== null;
}

/** Seconds for Node's utimes: microseconds, nudged a quarter of one so the kernel's truncation lands on it. */
function microsecondSeconds(ns: bigint): number {
  const micros = ns >= 0n ? ns / 1000n : -((-ns + 999n) / 1000n);
  return Number(micros) / 1e6 + 2.5e-7;
}

/**
 * Sets a path's access and modification times (ns since the epoch), of a symlink itself with
 * `noFollow`. To the nanosecond with the addon; to the microsecond without (warned once).
 */
export async function setTimesNs(
  path: string | Buffer,
  atimeNs: bigint,
  mtimeNs: bigint,
  noFollow = false,
): Promise<void> {
  const addon = load();
  if (addon !== null) {
    addon.utimensat(path, atimeNs, mtimeNs, noFollow);
    return;
  }
  warnMissing('times are kept to the microsecond only, and FIFOs and device nodes are not made');
  await (noFollow ? lutimes : utimes)(path, microsecondSeconds(atimeNs), microsecondSeconds(mtimeNs));
}

/** Is mknod there? Without the addon FIFOs and devices cannot be made (warned once). */
export function canMakeNodes(): boolean {
  if (load() !== null) return true;
  warnMissing('FIFOs and device nodes are not made, and times are kept to the microsecond only');
  return false;
}

/** mknod(2): `mode` with its S_IF* type (S_IFIFO needs no privilege; devices need root). Throws errno errors. */
export function makeNode(path: string | Buffer, mode: number, rdev: bigint | number = 0): void {
  const addon = load();
  if (addon === null) {
    warnMissing('FIFOs and device nodes are not made');
    throw Object.assign(new Error(`ENOSYS: the native addon is not built, mknod '${String(path)}'`), {
      code: 'ENOSYS',
    });
  }
  addon.mknod(path, mode, rdev);
}
