// A session held over the wire from the requester's side: an OpenSession stream that must be
// confirmed in time, then carry heartbeats; its loss is reported on the session's `lost` signal.
import * as grpc from '@grpc/grpc-js';
import { QuiesceError, type SetRequest, type WriterSession } from '../model/index.ts';
import { deferred, type Deferred } from '../util/index.ts';
import { closedError, type ClientChannel } from './client-channel.ts';
import { SessionEventSchema, describeZodError, type SessionEvent } from './convert.ts';
import { clientFailure, type ClientErrorContext } from './failure-status.ts';

/** A session held over the wire. */
export interface RemoteWriterSession extends WriterSession {
  readonly setId: string;
  /**
   * Aborted, with a QuiesceError (`not-responding` when the writer vanished), when the writer's
   * side of the session is gone: the stream ended or failed, or no heartbeat came for three
   * heartbeat periods. Not aborted by `close()`.
   */
  readonly lost: AbortSignal;
}

const DEFAULT_SESSION_OPEN_TIMEOUT_MS = 30_000;
/** A session counts as lost after this many heartbeat periods of silence. */
const MISSED_HEARTBEATS = 3;

/** `opening` until the writer's `opened` event, `ended` once stopped or failed (never left). */
type SessionStage = 'opening' | 'open' | 'ended';

/** One OpenSession stream and what watches it. */
interface SessionRun {
  readonly channel: ClientChannel;
  readonly setId: string;
  readonly stream: grpc.ClientReadableStream<unknown>;
  /** Settles once: with the session when the writer confirms it, with the failure if it never does. */
  readonly opened: Deferred<RemoteWriterSession>;
  readonly lost: AbortController;
  /** What the channel cancels when it closes: the session ends as if closed (`lost` stays quiet). */
  readonly handle: { cancel(): void };
  stage: SessionStage;
  lastHeard: number;
  openTimer: NodeJS.Timeout | undefined;
  watchdog: NodeJS.Timeout | undefined;
}

/**
 * Open a session for `request.setId` on the channel: resolves once the writer confirms it
 * (within the call timeout, or 30 s), rejects if the stream fails or ends before that.
 */
export async function openRemoteSession(channel: ClientChannel, request: SetRequest): Promise<RemoteWriterSession> {
  const { setId } = request;
  if (channel.closed) throw closedError(channel, 'OpenSession', null);
  const definition = channel.service.OpenSession;
  const openTimeoutMs = channel.callTimeoutMs ?? DEFAULT_SESSION_OPEN_TIMEOUT_MS;
  const stream = channel.client.makeServerStreamRequest(
    definition.path,
    definition.requestSerialize,
    definition.responseDeserialize,
    { setId },
    new grpc.Metadata(),
    {},
  );
  const run: SessionRun = {
    channel,
    setId,
    stream,
    opened: deferred<RemoteWriterSession>(),
    lost: new AbortController(),
    handle: { cancel: () => stop(run) },
    stage: 'opening',
    lastHeard: Date.now(),
    openTimer: undefined,
    watchdog: undefined,
  };
  channel.active.add(run.handle);
  run.openTimer = setTimeout(() => {
    fail(
      run,
      new QuiesceError(
        'not-responding',
        `writer at ${channel.address} did not open a session for set ${setId} within ${openTimeoutMs} ms. Is the writer process running, or is it stuck?`,
      ),
    );
  }, openTimeoutMs);
  watchStream(run);
  return run.opened.promise;
}

function watchStream(run: SessionRun): void {
  const { channel, setId, stream } = run;
  const context: ClientErrorContext = {
    target: channel.address,
    rpc: 'OpenSession',
    phase: null,
    callTimeoutMs: channel.callTimeoutMs,
  };
  stream.on('data', (raw: unknown) => onData(run, raw));
  stream.on('error', (error: unknown) => fail(run, clientFailure(error, context)));
  stream.on('end', () => {
    fail(
      run,
      new QuiesceError(
        'not-responding',
        `writer at ${channel.address} ended the session for set ${setId}; it is shutting down`,
      ),
    );
  });
}

function onData(run: SessionRun, raw: unknown): void {
  const parsed = SessionEventSchema.safeParse(raw);
  if (!parsed.success) {
    fail(
      run,
      new QuiesceError(
        'protocol',
        `writer at ${run.channel.address} sent an invalid session event: ${describeZodError(parsed.error)}`,
      ),
    );
    return;
  }
  run.lastHeard = Date.now();
  if (run.stage === 'opening' && parsed.data.kind === 'opened') confirm(run, parsed.data);
}

/** The writer's `opened` event: the session is open, and watched for heartbeats if it sends them. */
function confirm(run: SessionRun, event: SessionEvent): void {
  run.stage = 'open';
  clearTimeout(run.openTimer);
  if (event.heartbeatIntervalMs > 0) startWatchdog(run, event.heartbeatIntervalMs);
  run.opened.resolve({
    setId: run.setId,
    lost: run.lost.signal,
    close: async () => {
      if (run.stage !== 'ended') stop(run);
    },
  });
}

function startWatchdog(run: SessionRun, period: number): void {
  run.watchdog = setInterval(() => {
    const silentMs = Date.now() - run.lastHeard;
    if (silentMs <= MISSED_HEARTBEATS * period) return;
    fail(
      run,
      new QuiesceError(
        'not-responding',
        `writer at ${run.channel.address} sent no session heartbeat for set ${run.setId} in ${silentMs} ms (expected one every ${period} ms). Is the writer process running, or is it stuck?`,
      ),
    );
  }, period);
  run.watchdog.unref();
}

function stop(run: SessionRun): void {
  run.stage = 'ended';
  clearTimeout(run.openTimer);
  clearInterval(run.watchdog);
  run.channel.active.delete(run.handle);
  run.stream.cancel();
}

/** Ends the session for `error`: the opening rejects with it, an open session is `lost` with it. */
function fail(run: SessionRun, error: QuiesceError): void {
  const stage = run.stage;
  switch (stage) {
    case 'ended':
      return;
    case 'opening':
      stop(run);
      run.opened.reject(error);
      return;
    case 'open':
      stop(run);
      run.lost.abort(error);
      return;
    default:
      stage satisfies never;
  }
}
