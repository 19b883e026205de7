// What the SIGKILL tests share: a seeded random (printed, so a failure replays with
// QUIESCE_TEST_SEED=<seed>), the real command line as a child process that may be killed at a
// chosen moment, file hashes of a tree, and what `check --read-data` may report after a crash.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/quiesce.js', import.meta.url));

export interface SeededRandom {
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  /** `length` bytes that depend only on the seed and how many were drawn before. */
  bytes(length: number): Buffer;
}

/** The seed from QUIESCE_TEST_SEED, else a fresh one. */
export function testSeed(): number {
  const given = process.env.QUIESCE_TEST_SEED;
  if (given !== undefined && given !== '') return Number(given) >>> 0;
  return (Math.random() * 2 ** 32) >>> 0;
}

/** mulberry32 for choices; AES-256-CTR's keystream, keyed by the seed, for bytes. */
export function seededRandom(seed: number): SeededRandom {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const key = createHash('sha256').update(`quiesce-test-${seed}`).digest();
  const stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return {
    seed,
    next,
    int: (n) => Math.floor(next() * n),
    bytes: (length) => stream.update(Buffer.alloc(length)),
  };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs `quiesce ARGS` (bin/quiesce.js, as a user does) without blocking the event loop, so the
 * test's own children (the bank load) keep reporting. With `killAfterMs`, sends SIGKILL then,
 * unless the process ended first.
 */
export function quiesce(
  args: readonly string[],
  options: { env?: Record<string, string>; killAfterMs?: number; timeoutMs?: number } = {},
): Promise<CliResult> {
  const started = performance.now();
  const child = spawn(process.execPath, [bin, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timers: NodeJS.Timeout[] = [];
  if (options.killAfterMs !== undefined) timers.push(setTimeout(() => child.kill('SIGKILL'), options.killAfterMs));
  // A hang is a failure too: never wait for ever.
  timers.push(
    setTimeout(() => {
      stderr += `\n[test: killed after ${options.timeoutMs ?? 120_000} ms without an end]`;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 120_000),
  );
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const timer of timers) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** Every regular file below `root`, by its path relative to `root`, with its SHA-256. */
export async function hashFiles(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile())
        out.set(
          relative(root, path),
          createHash('sha256')
            .update(await readFile(path))
            .digest('hex'),
        );
    }
  };
  await walk(root);
  return out;
}

export interface CheckJson {
  ok: boolean;
  manifests: number;
  packs: number;
  bytesRead: number;
  problems: { kind: string; object: string; message: string }[];
}

/**
 * What a crash may leave and `check` may say: a pack that no index names (written before the
 * index that would have named it). Temporary files (`.tmp-*`) are not listed at all. Anything
 * else is damage. Returns the number of unreferenced packs.
 */
export function assertCheckClean(result: CliResult, context: string): number {
  assert.equal(result.code, 0, `${context}: check --read-data exits 0\n${result.stdout}\n${result.stderr}`);
  const report = JSON.parse(result.stdout) as CheckJson;
  assert.equal(report.ok, true, `${context}: check is ok`);
  const damage = report.problems.filter((p) => p.kind !== 'unreferenced-pack');
  assert.deepEqual(damage, [], `${context}: check finds no damage`);
  return report.problems.length;
}

/** Files whose name a backend gives a save in progress, below `dir`: what a kill left behind. */
export async function countTemporaries(dir: string): Promise<number> {
  let count = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }))
    if (entry.name.startsWith('.tmp-')) count++;
  return count;
}

export interface ListedSet {
  id: string;
  manifest: string;
  time: string;
  status: string;
  tags: string[];
}

/** The sets `quiesce backups --json` lists. */
export function parseSets(result: CliResult, context: string): ListedSet[] {
  assert.equal(result.code, 0, `${context}: backups exits 0\n${result.stderr}`);
  return (JSON.parse(result.stdout) as { sets: ListedSet[] }).sets;
}
