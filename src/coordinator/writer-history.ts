import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Failure, SetReport } from '../model/index.ts';

/** What the last set did to a writer, kept so `quiesce writers` can show it after the set's process ended. */
export interface WriterOutcome {
  setId: string;
  at: string;
  state: string;
  lastFailure: Failure | null;
}

function historyPath(stateDir: string): string {
  return join(stateDir, 'writer-outcomes.json');
}

export async function readWriterOutcomes(stateDir: string): Promise<Record<string, WriterOutcome>> {
  try {
    return JSON.parse(await readFile(historyPath(stateDir), 'utf8')) as Record<string, WriterOutcome>;
  } catch {
    return {};
  }
}

/** Records every writer's state and failure after a set (written to a temporary name, then renamed). */
export async function recordWriterOutcomes(stateDir: string, report: SetReport): Promise<void> {
  const outcomes = await readWriterOutcomes(stateDir);
  for (const writer of report.writers) {
    outcomes[writer.name] = { setId: report.id, at: report.finishedAt, state: writer.state, lastFailure: writer.error };
  }
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const path = historyPath(stateDir);
  await writeFile(`${path}.${process.pid}.tmp`, JSON.stringify(outcomes, null, 2), { mode: 0o600 });
  await rename(`${path}.${process.pid}.tmp`, path);
}
