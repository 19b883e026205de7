import { z } from 'zod';
import { messageOf } from '../util/index.ts';
import { ALL_PHASES, type Phase } from './phases.ts';

/** The failure codes a writer answers with (docs/design.md), plus the coordinator's own refusals. */
export const FAILURE_CODES = [
  'retryable',
  'nonretryable',
  'timeout',
  'out-of-resources',
  'inconsistent-snapshot',
  'partial-failure',
  'not-responding',
] as const;
export type FailureCode = (typeof FAILURE_CODES)[number];
export const FailureCodeSchema = z.enum(FAILURE_CODES);

/** Errors that are not a writer's failure but the tool's: bad usage, bad config, a busy host. */
export const TOOL_ERROR_CODES = [
  'bad-config',
  'bad-usage',
  'set-in-progress',
  'provider-failed',
  'protocol',
  // The repository's: a wrong password, no or a foreign repository, a version we cannot read,
  // damaged data, a lock held by another process, a full disk.
  'wrong-password',
  'not-a-repository',
  'unsupported-version',
  'damaged',
  'locked',
  'no-space',
] as const;
export type ToolErrorCode = (typeof TOOL_ERROR_CODES)[number];

export type ErrorCode = FailureCode | ToolErrorCode;
export const ERROR_CODES: readonly ErrorCode[] = [...FAILURE_CODES, ...TOOL_ERROR_CODES];

/**
 * The gRPC status a code crosses the wire with: a hint for generic tools (the requester trusts
 * the failure carried in the trailers). Names of `@grpc/grpc-js`'s `status`, which rpc/ maps.
 */
export type GrpcStatusName =
  | 'ABORTED'
  | 'FAILED_PRECONDITION'
  | 'DEADLINE_EXCEEDED'
  | 'RESOURCE_EXHAUSTED'
  | 'DATA_LOSS'
  | 'UNAVAILABLE'
  | 'INVALID_ARGUMENT'
  | 'PERMISSION_DENIED';

/** How the command line exits on an error of a code: `usage` (2) when what the user gave was wrong, else `failed` (1). */
export type ErrorExit = 'usage' | 'failed';

export interface ErrorCodeMeaning {
  /** Asking again, unchanged, may succeed (another set or lock holder goes away, a timer runs longer). */
  retryable: boolean;
  grpcStatus: GrpcStatusName;
  exit: ErrorExit;
}

/** What each code means, in one place: retryability, gRPC status and exit status. */
export const ERROR_CODE_TABLE = {
  retryable: { retryable: true, grpcStatus: 'ABORTED', exit: 'failed' },
  nonretryable: { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'failed' },
  timeout: { retryable: true, grpcStatus: 'DEADLINE_EXCEEDED', exit: 'failed' },
  'out-of-resources': { retryable: true, grpcStatus: 'RESOURCE_EXHAUSTED', exit: 'failed' },
  'inconsistent-snapshot': { retryable: false, grpcStatus: 'DATA_LOSS', exit: 'failed' },
  'partial-failure': { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'failed' },
  'not-responding': { retryable: false, grpcStatus: 'UNAVAILABLE', exit: 'failed' },
  'bad-config': { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'usage' },
  'bad-usage': { retryable: false, grpcStatus: 'INVALID_ARGUMENT', exit: 'usage' },
  'set-in-progress': { retryable: true, grpcStatus: 'ABORTED', exit: 'failed' },
  'provider-failed': { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'failed' },
  protocol: { retryable: false, grpcStatus: 'INVALID_ARGUMENT', exit: 'failed' },
  'wrong-password': { retryable: false, grpcStatus: 'PERMISSION_DENIED', exit: 'usage' },
  'not-a-repository': { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'usage' },
  'unsupported-version': { retryable: false, grpcStatus: 'FAILED_PRECONDITION', exit: 'failed' },
  damaged: { retryable: false, grpcStatus: 'DATA_LOSS', exit: 'failed' },
  locked: { retryable: true, grpcStatus: 'ABORTED', exit: 'failed' },
  'no-space': { retryable: false, grpcStatus: 'RESOURCE_EXHAUSTED', exit: 'failed' },
} as const satisfies Record<ErrorCode, ErrorCodeMeaning>;

export function isRetryable(code: ErrorCode): boolean {
  return ERROR_CODE_TABLE[code].retryable;
}

export const PhaseSchema = z.enum(ALL_PHASES as [Phase, ...Phase[]]);

export const FailureSchema = z.object({
  code: z.enum([...FAILURE_CODES, ...TOOL_ERROR_CODES]),
  phase: PhaseSchema.nullable(),
  writer: z.string().nullable(),
  component: z.string().nullable(),
  message: z.string().max(8192),
  /** Set on errors that came after every writer thawed and the commit succeeded: they do not lower consistency. */
  benign: z.boolean().optional(),
});
export type Failure = z.infer<typeof FailureSchema>;

export interface QuiesceErrorContext {
  phase?: Phase | null;
  writer?: string | null;
  component?: string | null;
  cause?: unknown;
}

/**
 * The one error type of quiesce. It carries a code, the phase, the writer and component
 * where known, and a message meant for the operator that says what to do.
 */
export class QuiesceError extends Error {
  readonly code: ErrorCode;
  readonly phase: Phase | null;
  readonly writer: string | null;
  readonly component: string | null;

  constructor(code: ErrorCode, message: string, context: QuiesceErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'QuiesceError';
    this.code = code;
    this.phase = context.phase ?? null;
    this.writer = context.writer ?? null;
    this.component = context.component ?? null;
  }

  /** The same error with missing context filled in (never overwrites what is known). */
  withContext(context: QuiesceErrorContext): QuiesceError {
    return new QuiesceError(this.code, this.message, {
      phase: this.phase ?? context.phase ?? null,
      writer: this.writer ?? context.writer ?? null,
      component: this.component ?? context.component ?? null,
      cause: this.cause,
    });
  }

  toJSON(): Failure {
    return {
      code: this.code,
      phase: this.phase,
      writer: this.writer,
      component: this.component,
      message: this.message,
    };
  }

  static fromJSON(value: unknown): QuiesceError {
    const failure = FailureSchema.parse(value);
    return new QuiesceError(failure.code, failure.message, failure);
  }

  /** Any thrown value as a QuiesceError; unknown errors become `code` (default nonretryable). */
  static from(error: unknown, code: ErrorCode = 'nonretryable', context: QuiesceErrorContext = {}): QuiesceError {
    if (error instanceof QuiesceError) return error.withContext(context);
    if (error instanceof Error && error.name === 'TimeoutError') {
      return new QuiesceError('timeout', error.message, { ...context, cause: error });
    }
    return new QuiesceError(code, messageOf(error), { ...context, cause: error });
  }
}

export function isFailureCode(code: ErrorCode): code is FailureCode {
  return (FAILURE_CODES as readonly string[]).includes(code);
}
