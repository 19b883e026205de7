// The flags `snapshot` and `backup` share: --quiesce, which overrides every writer's policy,
// --type, and --wait, how long to wait for a set in progress on this host.
import {
  BackupTypeSchema,
  QuiesceError,
  QuiescePolicySchema,
  type BackupType,
  type QuiescePolicy,
} from '../model/index.ts';

/** `--type full|copy|incremental|differential|log`. */
export function parseTypeFlag(value: string): BackupType {
  const parsed = BackupTypeSchema.safeParse(value);
  if (!parsed.success)
    throw new QuiesceError('bad-usage', `--type takes full, copy, incremental, differential or log, not ${value}`);
  return parsed.data;
}

/** `--quiesce require|prefer|off`, or undefined when not given. */
export function parsePolicyFlag(value: string | undefined): QuiescePolicy | undefined {
  if (value === undefined) return undefined;
  const parsed = QuiescePolicySchema.safeParse(value);
  if (!parsed.success) throw new QuiesceError('bad-usage', `--quiesce takes require, prefer or off, not ${value}`);
  return parsed.data;
}

/** `--wait SECONDS`, in milliseconds. */
export function parseWaitFlag(value: string | undefined): number {
  const seconds = Number(value ?? '0');
  if (!Number.isFinite(seconds) || seconds < 0)
    throw new QuiesceError('bad-usage', `--wait takes a number of seconds, not ${value}`);
  return seconds * 1000;
}

// Still exported here for the commands that take it from here; main.ts's rootInterrupt is the one to use.
export { interruptSignal } from './interrupt.ts';
