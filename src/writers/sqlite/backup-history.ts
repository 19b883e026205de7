/**
 * The SQLite writer's own record of its backup chain, kept beside the other writers' state in
 * `stateDir`: which stamp is the differential base (the last full that completed) and which is
 * the last backup an incremental must build on. It is what the chain guard compares the
 * requester's stamps with. Written atomically: a crash leaves the old or the new file, never half.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { QuiesceError } from '../../model/index.ts';

const HistorySchema = z.object({
  v: z.literal(1),
  instanceId: z.string(),
  /** The stamp id of the last full backup that completed successfully. */
  baseStampId: z.string().nullable(),
  baseSetId: z.string().nullable(),
  baseAt: z.string().nullable(),
  /** The stamp id of the last full or incremental backup that completed successfully. */
  lastStampId: z.string().nullable(),
  lastSetId: z.string().nullable(),
  lastAt: z.string().nullable(),
});
export type BackupHistory = z.infer<typeof HistorySchema>;

export function emptyHistory(instanceId: string): BackupHistory {
  return {
    v: 1,
    instanceId,
    baseStampId: null,
    baseSetId: null,
    baseAt: null,
    lastStampId: null,
    lastSetId: null,
    lastAt: null,
  };
}

/** `${stateDir}/sqlite-<first 16 hex digits of sha256(instanceId)>.json` */
export function historyPath(stateDir: string, instanceId: string): string {
  const hash = createHash('sha256').update(instanceId).digest('hex').slice(0, 16);
  return join(stateDir, `sqlite-${hash}.json`);
}

/** The history, or an empty one when there is no file yet. A corrupt file is an error: the chain guard must not guess. */
export async function readHistory(path: string, instanceId: string): Promise<BackupHistory> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyHistory(instanceId);
    throw QuiesceError.from(error, 'nonretryable');
  }
  try {
    return HistorySchema.parse(JSON.parse(text));
  } catch (error) {
    throw new QuiesceError(
      'nonretryable',
      `the sqlite writer's history ${path} is corrupt; delete it (the next incremental or differential is then taken as full)`,
      { cause: error },
    );
  }
}

/** Writes to a temporary name, syncs, renames over the old file and syncs the directory. */
export async function writeHistory(path: string, history: BackupHistory): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const file = await open(temp, 'wx', 0o600);
    try {
      await file.writeFile(`${JSON.stringify(history, null, 2)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw QuiesceError.from(error, 'nonretryable');
  }
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
