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

export function exitForError(error: unknown): number {
  if (error instanceof QuiesceError && (error.code === 'bad-config' || error.code === 'bad-usage')) return EXIT.usage;
  return EXIT.failed;
}
