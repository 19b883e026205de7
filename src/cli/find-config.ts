import { existsSync } from 'node:fs';
import { loadConfig, parseConfig, type Config } from '../config/index.ts';

export const SYSTEM_CONFIG = '/etc/quiesce/quiesce.yaml';

/** The config named by --config, QUIESCE_CONFIG or /etc/quiesce/quiesce.yaml; an empty one otherwise. */
export async function findConfig(file: string | undefined): Promise<Config> {
  const path = file ?? process.env.QUIESCE_CONFIG ?? (existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : undefined);
  if (path === undefined) return parseConfig('{}', '(embedded defaults)');
  return loadConfig(path);
}
