/**
 * How a failure crosses the wire: a gRPC status code (a hint for generic tools) plus the
 * failure itself as JSON in the `quiesce-failure-bin` trailing metadata, which the
 * requester trusts over the status code. proto/quiesce/v1/writer.proto documents the table.
 */
import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_TABLE, QuiesceError, type ErrorCode, type Failure, type Phase } from '../model/index.ts';
import { describeZodError, parseFailureJson } from './convert.ts';
import { FAILURE_METADATA_KEY, MAX_MESSAGE_BYTES } from './writer-proto.ts';
import { ZodError } from 'zod';

/** The gRPC status a writer answers for a failure of this code (model/failure.ts's table names it). */
export function grpcStatusForFailure(code: ErrorCode): grpc.status {
  return grpc.status[ERROR_CODE_TABLE[code].grpcStatus];
}

/** The failure's JSON never exceeds this many bytes of message (the schema's limit is 8192 characters). */
const MAX_FAILURE_MESSAGE_BYTES = 8192;
/** The status details (the grpc-message header) carry a shorter copy of the message. */
const MAX_DETAILS_BYTES = 1024;

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  // Cut at a character boundary (never inside a UTF-8 sequence) and mark the cut.
  let end = maxBytes - 3;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  return `${bytes.subarray(0, end).toString('utf8')}…`;
}

/** What the server answers for any thrown value: a QuiesceError's status, details and metadata. */
export function failureStatus(error: unknown, phase: Phase | null): grpc.StatusObject {
  const failure = QuiesceError.from(error, 'nonretryable', { phase });
  const json: Failure = { ...failure.toJSON(), message: truncateUtf8(failure.message, MAX_FAILURE_MESSAGE_BYTES) };
  const metadata = new grpc.Metadata();
  metadata.set(FAILURE_METADATA_KEY, Buffer.from(JSON.stringify(json), 'utf8'));
  return {
    code: grpcStatusForFailure(failure.code),
    details: truncateUtf8(`${failure.code}: ${failure.message}`, MAX_DETAILS_BYTES),
    metadata,
  };
}

/** The server's answer to a request that fails validation: INVALID_ARGUMENT, code `protocol`. */
export function invalidRequestStatus(rpc: string, phase: Phase | null, problem: string): grpc.StatusObject {
  return failureStatus(new QuiesceError('protocol', `invalid ${rpc} request: ${problem}`, { phase }), phase);
}

export interface ClientErrorContext {
  /** The writer's address, for messages: `unix:///run/quiesce/writers/shop.sock`. */
  target: string;
  rpc: string;
  phase: Phase | null;
  callTimeoutMs: number | undefined;
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === 'number';
}

/**
 * The QuiesceError a failed call stands for: the writer's own failure when the trailers carry
 * one, otherwise one derived from the status code (unreachable or silent writers are
 * `not-responding`; malformed or oversized messages are `protocol`).
 */
export function clientFailure(error: unknown, context: ClientErrorContext): QuiesceError {
  if (!isServiceError(error)) return QuiesceError.from(error, 'nonretryable', { phase: context.phase });
  const carried = error.metadata?.get(FAILURE_METADATA_KEY)[0];
  if (carried !== undefined) return carriedFailure(error, carried, context);
  const details = cleanDetails(error.details) || grpc.status[error.code];
  const { code, message } = (STATUS_FAILURES[error.code] ?? failedCall)({ ...context, details });
  return new QuiesceError(code, message, { phase: context.phase, cause: error });
}

/**
 * grpc-js's status details without its noise: an empty "Resolution note: " and the class name
 * of the underlying error ("Last error: Error: connect ENOENT ...").
 */
export function cleanDetails(details: string): string {
  return details
    .replace(/\.?\s*Resolution note:\s*$/, '')
    .replace(/\b(Last error): (?:[A-Z]\w*)?Error: /g, '$1: ')
    .trim();
}

/** grpc-js's details when a message passed the size limit (`Received message larger than max (N vs M)`, `Attempted to send message with a size larger than N`). */
const SIZE_LIMIT = /larger than/i;

/** The writer's own failure from the trailers, or a `protocol` error when it cannot be read. */
function carriedFailure(error: grpc.ServiceError, carried: string | Buffer, context: ClientErrorContext): QuiesceError {
  const json = typeof carried === 'string' ? carried : carried.toString('utf8');
  try {
    const failure = parseFailureJson(json);
    // A failure with no words would print as "quiesce: " and nothing else.
    const message =
      failure.message.trim() === ''
        ? `writer at ${context.target} failed ${context.rpc} with ${failure.code} and no message; status: ${error.details}`
        : failure.message;
    return new QuiesceError(failure.code, message, { ...failure, cause: error });
  } catch (parseError) {
    const problem = parseError instanceof ZodError ? describeZodError(parseError) : String(parseError);
    return new QuiesceError(
      'protocol',
      `writer at ${context.target} answered ${context.rpc} with an unreadable failure (${problem}); status: ${error.details}`,
      { phase: context.phase, cause: error },
    );
  }
}

/** What a status means when no failure came with it: the code, and a message naming the writer and the call. */
type StatusFailure = (call: ClientErrorContext & { details: string }) => { code: ErrorCode; message: string };

const failedCall: StatusFailure = ({ target, rpc, details }) => ({
  code: 'nonretryable',
  message: `writer at ${target} failed ${rpc}: ${details}`,
});

const refusedCall: StatusFailure = ({ target, rpc, details }) => ({
  code: 'protocol',
  message: `writer at ${target} refused ${rpc}: ${details}`,
});

const STATUS_FAILURES: Partial<Record<grpc.status, StatusFailure>> = {
  [grpc.status.UNAVAILABLE]: ({ target, rpc, details }) => ({
    code: 'not-responding',
    message: `writer at ${target} is not responding to ${rpc} (${details}). Is the writer process running and listening on that socket?`,
  }),
  [grpc.status.DEADLINE_EXCEEDED]: ({ target, rpc, callTimeoutMs }) => ({
    code: 'not-responding',
    message: `writer at ${target} did not answer ${rpc} ${callTimeoutMs === undefined ? 'before the deadline' : `within ${callTimeoutMs} ms`}. Is the writer process running, or is it stuck? Check its log.`,
  }),
  [grpc.status.CANCELLED]: ({ target, rpc, details }) => ({
    code: 'not-responding',
    message: `writer at ${target} dropped the ${rpc} call (${details}). Is the writer process still running?`,
  }),
  [grpc.status.RESOURCE_EXHAUSTED]: ({ target, rpc, details }) => ({
    code: 'protocol',
    // The size hint only when the size limit is the cause: a writer may run out of something else.
    message: SIZE_LIMIT.test(details)
      ? `a ${rpc} message to or from writer at ${target} was refused (${details}); messages are limited to ${MAX_MESSAGE_BYTES} bytes. Select fewer components or files per set.`
      : `writer at ${target} refused ${rpc}: out of resources (${details})`,
  }),
  [grpc.status.UNIMPLEMENTED]: ({ target, rpc, details }) => ({
    code: 'protocol',
    message: `writer at ${target} does not implement ${rpc} (${details}); is it built for quiesce.v1.WriterService?`,
  }),
  [grpc.status.INVALID_ARGUMENT]: refusedCall,
  [grpc.status.INTERNAL]: refusedCall,
  [grpc.status.ABORTED]: ({ target, rpc, details }) => ({
    code: 'retryable',
    message: `writer at ${target} failed ${rpc}: ${details}`,
  }),
};
