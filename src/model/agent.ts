// The interface a guest implements: a writer, plus the guest's own report of a set.
import type { CallOptions } from './call-options.ts';
import type { SetRequest } from './messages.ts';
import type { GuestReport } from './report.ts';
import type { WriterEndpoint } from './writer.ts';

/** A guest as its agent serves it: a writer, and the guest's own report of a set. */
export interface AgentEndpoint extends WriterEndpoint {
  /** The guest's report of set `setId` (GuestReport, frozenAtMs as epoch milliseconds); `nonretryable` for an unknown set. */
  report(request: SetRequest, options?: CallOptions): Promise<GuestReport>;
}
