import { QuiesceError, type SetStatus } from '../model/index.ts';

/** Exit status, per ARCHITECTURE.md: 0 success, 1 failure, 2 bad usage or config, 3 partial. */
export const EXIT = { ok: 0, failed: 1, usage: 2, partial: 3 } as const;

export function exitForStatus(status: SetStatus): number {
  switch (status) {
    case 'succeeded':
      return EXIT.ok;
    case 'partial':
      return EXIT.partial;
    case 'failed':
      return EXIT.failed;
    default:
      return status satisfies never;
  }
}

/** What the user gave was wrong (usage, config, password, a path that is no repository): exit 2. */
const USAGE_CODES = new Set(['bad-config', 'bad-usage', 'wrong-password', 'not-a-repository']);

export function exitForError(error: unknown): number {
  if (error instanceof QuiesceError && USAGE_CODES.has(error.code)) return EXIT.usage;
  return EXIT.failed;
}
