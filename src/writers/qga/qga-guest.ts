import { QuiesceError, type Failure, type GuestReport, type Phase, type WriterEndpoint } from '../../model/index.ts';
import { createWriterRuntime } from '../sdk/index.ts';
import { createQgaWriter, type QgaWriterOptions } from './qga-writer.ts';

/**
 * A qemu-ga guest as the host's coordinator takes it: the qga writer on the SDK runtime, plus
 * the guest's node in the set's report (`agent: qga`, file-system level at best, the failure
 * that lowered it, when it froze by the host's clock and for how long).
 */
export function createQgaGuest(options: QgaWriterOptions): WriterEndpoint {
  const runtime = createWriterRuntime(createQgaWriter(options));
  let seen = false;
  let failure: Failure | null = null;
  let frozenAt: number | null = null;
  let frozenMs: number | null = null;
  let level: GuestReport['consistency'] = 'none';

  async function tracked<T>(phase: Phase, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      failure ??= QuiesceError.from(error, 'nonretryable', { phase, writer: options.name }).toJSON();
      throw error;
    }
  }

  return {
    ...runtime,
    prepareBackup: (request, callOptions) => {
      seen = true;
      failure = null;
      frozenAt = null;
      frozenMs = null;
      level = 'none';
      return tracked('prepare-backup', () => runtime.prepareBackup(request, callOptions));
    },
    prepareSnapshot: (request, callOptions) =>
      tracked('prepare-snapshot', () => runtime.prepareSnapshot(request, callOptions)),
    freeze: async (request, callOptions) => {
      await tracked('freeze', () => runtime.freeze(request, callOptions));
      frozenAt = Date.now();
    },
    thaw: async (request, callOptions) => {
      const response = await tracked('thaw', () => runtime.thaw(request, callOptions));
      frozenMs = response.frozenMs;
      level = response.selfThawed ? 'crash' : (response.consistency ?? 'application');
      return response;
    },
    guestReport: (): GuestReport | null =>
      seen
        ? {
            name: options.name,
            agent: 'qga',
            consistency: failure ? 'crash' : level,
            status: failure ? 'partial' : 'succeeded',
            error: failure,
            message: "the QEMU guest agent freezes file systems only: the guest's applications took no part",
            frozenAtMs: frozenAt,
            freezeWindowMs: frozenMs,
            components: [],
            writers: [],
            guests: [],
          }
        : null,
  };
}
