import { QuiesceError } from '../model/index.ts';
import { BackendError } from './backend/backend.ts';

/** A backend's full disk or quota as `no-space`, saying what to do; anything else unchanged. */
export function storageError(error: unknown, location: string): Error {
  if (error instanceof BackendError && error.kind === 'no-space') {
    return new QuiesceError(
      'no-space',
      `the repository at ${location} is out of space: free some (quiesce forget --prune) or move it to a larger store`,
      { cause: error },
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

export function isNotFound(error: unknown): boolean {
  return error instanceof BackendError && error.kind === 'not-found';
}
