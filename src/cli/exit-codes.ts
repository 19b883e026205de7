import { ERROR_CODE_TABLE, QuiesceError, type SetStatus } from '../model/index.ts';

/** Exit status: 0 success, 1 failure, 2 bad usage or config, 3 partial. */
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

/** The exit status for what a command threw: its code's (model/failure.ts's table), 1 for anything else. */
export function exitForError(error: unknown): number {
  if (error instanceof QuiesceError) return EXIT[ERROR_CODE_TABLE[error.code].exit];
  return EXIT.failed;
}
