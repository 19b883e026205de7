import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { PROVIDER_NAMES, type ProviderName } from '../model/index.ts';

/**
 * What a set being created records about itself under `<stateDir>/running/<setId>.json`, from
 * the moment it holds the host's set lock until it ends: its process, its staging directory and
 * which provider takes which paths. A record left behind by a process that is gone is a dead set
 * (killed, or its host crashed) whose snapshots nobody will release; the next set cleans it up
 * (dead-set-cleanup.ts). A set kept with `--keep` is recorded apart, under `sets/`, with no pid.
 */
export interface RunningSet {
  pid: number;
  /** When that process started (`processStart`): a pid reused since is not this set's. */
  start?: string | null;
  setId: string;
  startedAt: string;
  stagingDir: string;
  shares: { provider: ProviderName; paths: string[] }[];
}

const RunningSetSchema = z.object({
  pid: z.number().int(),
  start: z.string().max(128).nullish(),
  setId: z.string().regex(/^[A-Za-z0-9._-]+$/),
  startedAt: z.string(),
  stagingDir: z.string(),
  shares: z.array(z.object({ provider: z.enum([...PROVIDER_NAMES, 'host']), paths: z.array(z.string()) })),
});

export function runningSetsDir(stateDir: string): string {
  return join(stateDir, 'running');
}

/** Writes (or rewrites) the record of a set (to a temporary name, then renamed). */
export async function saveRunningSet(stateDir: string, record: RunningSet): Promise<void> {
  const dir = runningSetsDir(stateDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${record.setId}.json`);
  await writeFile(`${path}.tmp`, JSON.stringify(record), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

export async function removeRunningSet(stateDir: string, setId: string): Promise<void> {
  await rm(join(runningSetsDir(stateDir), `${setId}.json`), { force: true });
}

/** Every record, and the names of files there that are none (torn, or not ours). */
export async function listRunningSets(stateDir: string): Promise<{ sets: RunningSet[]; torn: string[] }> {
  const dir = runningSetsDir(stateDir);
  const names = await readdir(dir).catch(() => [] as string[]);
  const sets: RunningSet[] = [];
  const torn: string[] = [];
  for (const name of names.sort()) {
    const path = join(dir, name);
    if (!name.endsWith('.json')) {
      torn.push(path);
      continue;
    }
    try {
      sets.push(RunningSetSchema.parse(JSON.parse(await readFile(path, 'utf8'))));
    } catch {
      torn.push(path);
    }
  }
  return { sets, torn };
}
