// A session held over the wire from the writer's side: an OpenSession stream that carries
// heartbeats, and whose end, for whatever reason (cancel, disconnect, server stop), closes the
// endpoint's session exactly once.
import type * as grpc from '@grpc/grpc-js';
import type { WriterEndpoint, WriterSession } from '../model/index.ts';
import { SessionRequestSchema, type SessionEvent } from './convert.ts';
import { failureStatus, invalidRequestStatus } from './failure-status.ts';
import { parseRequest } from './request-decode.ts';

/** An open session stream: `stop` ends the stream (the writer is going away) and closes the session. */
export interface HeldSession {
  stop(): Promise<void>;
}

/** What every session of one server shares. */
export interface SessionHost {
  readonly heartbeatIntervalMs: number;
  readonly onError: (error: unknown) => void;
  readonly sessions: Set<HeldSession>;
}

type SessionCall = grpc.ServerWritableStream<unknown, object>;

/** One session stream and the endpoint session it holds. */
interface SessionStream {
  readonly call: SessionCall;
  readonly session: WriterSession;
  readonly setId: string;
  readonly host: SessionHost;
  readonly held: HeldSession;
  heartbeat: NodeJS.Timeout | undefined;
  ended: Promise<void> | undefined;
}

/** Serve one OpenSession call: validate it, open the endpoint's session, hold it until the stream ends. */
export async function serveSession(endpoint: WriterEndpoint, call: SessionCall, host: SessionHost): Promise<void> {
  const parsed = parseRequest(call.request, (wire) => wire, SessionRequestSchema);
  if (!parsed.ok) {
    call.emit('error', invalidRequestStatus('OpenSession', null, parsed.problem));
    return;
  }
  const { setId } = parsed.value;
  let session: WriterSession;
  try {
    session = await endpoint.openSession({ setId });
  } catch (error) {
    if (!call.cancelled) call.emit('error', failureStatus(error, null));
    return;
  }
  await holdSession(call, session, setId, host);
}

async function holdSession(call: SessionCall, session: WriterSession, setId: string, host: SessionHost): Promise<void> {
  const stream: SessionStream = {
    call,
    session,
    setId,
    host,
    held: {
      stop: async () => {
        if (writable(call)) call.end();
        await endSession(stream);
      },
    },
    heartbeat: undefined,
    ended: undefined,
  };
  if (call.cancelled) {
    await endSession(stream);
    return;
  }
  host.sessions.add(stream.held);
  call.once('cancelled', () => {
    void endSession(stream);
  });
  // A stream that closes without a cancel (the server ended it) ends the session too.
  call.once('close', () => {
    void endSession(stream);
  });
  call.on('error', host.onError);
  send(stream, 'opened');
  stream.heartbeat = setInterval(() => send(stream, 'heartbeat'), host.heartbeatIntervalMs);
}

function writable(call: SessionCall): boolean {
  return !call.cancelled && !call.writableEnded && !call.destroyed;
}

function send(stream: SessionStream, kind: SessionEvent['kind']): void {
  if (!writable(stream.call)) return;
  const { setId, host } = stream;
  const event: SessionEvent = { kind, setId, heartbeatIntervalMs: host.heartbeatIntervalMs, sentAtMs: Date.now() };
  stream.call.write(event);
}

/** Ends the session once, however many ways its stream ends. */
function endSession(stream: SessionStream): Promise<void> {
  stream.ended ??= closeSession(stream);
  return stream.ended;
}

async function closeSession(stream: SessionStream): Promise<void> {
  clearInterval(stream.heartbeat);
  stream.host.sessions.delete(stream.held);
  try {
    await stream.session.close();
  } catch (error) {
    stream.host.onError(error);
  }
}
