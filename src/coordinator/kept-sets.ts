import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  PROVIDER_NAMES,
  QuiesceError,
  SnapshotPathSchema,
  type Provider,
  type ProviderName,
  type ProviderSnapshot,
} from '../model/index.ts';

/** A set kept with `--keep`: what `releaseKeptSet` needs. */
export interface KeptSet {
  setId: string;
  createdAt: string;
  snapshots: ProviderSnapshot[];
}

const UnchangedFileSchema = z
  .object({
    snapshotDir: z.string(),
    name: z.string(),
    mode: z.number(),
    uid: z.number(),
    gid: z.number(),
    size: z.number(),
    mtimeNs: z.string(),
    directory: z.literal(true).optional(),
  })
  .passthrough();

// Passthrough: a provider's snapshot is written as it was and read back whole.
const ProviderSnapshotSchema = z
  .object({
    provider: z.enum([...PROVIDER_NAMES, 'host']),
    setId: z.string(),
    paths: z.array(SnapshotPathSchema),
    handle: z.unknown(),
    unchanged: z.array(UnchangedFileSchema).optional(),
  })
  .passthrough();

const KeptSetSchema = z.object({
  setId: z.string(),
  createdAt: z.string(),
  snapshots: z.array(ProviderSnapshotSchema),
});

function keptSetsDir(stateDir: string): string {
  return join(stateDir, 'sets');
}

/** Remembers a kept set under `<stateDir>/sets/<setId>.json` (written to a temporary name, then renamed). */
export async function saveKeptSet(stateDir: string, kept: KeptSet): Promise<void> {
  const dir = keptSetsDir(stateDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${kept.setId}.json`);
  await writeFile(`${path}.tmp`, JSON.stringify(kept, null, 2), {
    mode: 0o600,
  });
  await rename(`${path}.tmp`, path);
}

/** Reads one kept set's file; a file that is not one fails with a message naming it. */
async function readKeptSet(path: string): Promise<KeptSet> {
  const text = await readFile(path, 'utf8');
  const parsed = KeptSetSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
    throw new QuiesceError(
      'damaged',
      `${path} is not a kept set (${where}${issue?.message ?? 'invalid'}); quiesce cannot release its snapshots`,
    );
  }
  return parsed.data as KeptSet;
}

/** The sets kept with `--keep` on this host. */
export async function listKeptSets(stateDir: string): Promise<KeptSet[]> {
  const dir = keptSetsDir(stateDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const sets: KeptSet[] = [];
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    sets.push(await readKeptSet(join(dir, name)));
  }
  return sets;
}

/** Release a kept set's snapshots and forget it. Idempotent per snapshot. */
export async function releaseKeptSet(
  stateDir: string,
  setId: string,
  providers: Map<ProviderName, Provider>,
  options: { signal?: AbortSignal } = {},
): Promise<KeptSet> {
  if (!/^[A-Za-z0-9._-]+$/.test(setId)) throw new QuiesceError('bad-usage', `${setId} is not a set id`);
  const path = join(keptSetsDir(stateDir), `${setId}.json`);
  let kept: KeptSet;
  try {
    kept = await readKeptSet(path);
  } catch (error) {
    // A file that is there but is no kept set says so; any other failure to read it means no such set.
    if (error instanceof QuiesceError) throw error;
    throw new QuiesceError(
      'bad-usage',
      `no kept set ${setId} on this host; \`quiesce snapshot --list\` shows the kept sets`,
    );
  }
  for (const snapshot of kept.snapshots) {
    const provider = providers.get(snapshot.provider);
    if (!provider)
      throw new QuiesceError(
        'provider-failed',
        `set ${setId} was taken by provider ${snapshot.provider}, which is not available here`,
      );
    await provider.release(snapshot, options);
  }
  await rm(path, { force: true });
  return kept;
}
