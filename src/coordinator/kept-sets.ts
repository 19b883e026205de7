import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError, type Provider, type ProviderName, type ProviderSnapshot } from '../model/index.ts';

/** A set kept with `--keep`: what `releaseKeptSet` needs. */
export interface KeptSet {
  setId: string;
  createdAt: string;
  snapshots: ProviderSnapshot[];
}

function keptSetsDir(stateDir: string): string {
  return join(stateDir, 'sets');
}

/** Remembers a kept set under `<stateDir>/sets/<setId>.json` (written to a temporary name, then renamed). */
export async function saveKeptSet(stateDir: string, kept: KeptSet): Promise<void> {
  const dir = keptSetsDir(stateDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${kept.setId}.json`);
  await writeFile(`${path}.tmp`, JSON.stringify(kept, null, 2), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
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
    sets.push(JSON.parse(await readFile(join(dir, name), 'utf8')) as KeptSet);
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
    kept = JSON.parse(await readFile(path, 'utf8')) as KeptSet;
  } catch {
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
