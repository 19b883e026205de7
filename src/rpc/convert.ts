/**
 * Between the model's shapes and the wire's: one table entry per unary rpc, with the zod
 * schema that validates what arrives and the two small conversions where the shapes differ
 * (null ↔ absent, "no list" ↔ a wrapper message, proto zero values ↔ model defaults).
 */
import { z } from 'zod';
import {
  BackupCompleteRequestSchema,
  FailureSchema,
  FreezeRequestSchema,
  PostSnapshotRequestSchema,
  PostSnapshotResponseSchema,
  PrepareBackupRequestSchema,
  PrepareBackupResponseSchema,
  RestoreRequestSchema,
  SetRequestSchema,
  ThawResponseSchema,
  WriterMetadataSchema,
  WriterStatusSchema,
  GuestReportSchema,
  QuiesceError,
  type AgentEndpoint,
  type CallOptions,
  type GuestReport,
  type SetRequest,
  type Failure,
  type Phase,
  type PostSnapshotResponse,
  type WriterEndpoint,
  type WriterMetadata,
  type WriterStatus,
} from '../model/index.ts';
import { isRecord } from '../util/index.ts';
import type { AgentRpc } from './writer-proto.ts';

type Wire = Record<string, unknown>;

/** The plain object a decoded message is (or an empty one for anything else). */
export function asWire(value: unknown): Wire {
  return isRecord(value) ? value : {};
}

function wireList(value: unknown): Wire[] {
  return Array.isArray(value) ? value.map(asWire) : [];
}

/** An empty string (proto's zero value) as absent, so the model's default applies. */
function emptyAsAbsent(value: unknown): unknown {
  return value === '' ? undefined : value;
}

export function metadataFromWire(value: unknown): unknown {
  const wire = asWire(value);
  return {
    ...wire,
    restoreMethod: emptyAsAbsent(wire.restoreMethod),
    components: wireList(wire.components).map((component) => ({
      ...component,
      files: wireList(component.files).map((file) => ({ ...file, pattern: emptyAsAbsent(file.pattern) })),
    })),
  };
}

export function failureFromWire(value: unknown): unknown {
  const wire = asWire(value);
  return { ...wire, phase: wire.phase ?? null, writer: wire.writer ?? null, component: wire.component ?? null };
}

function statusFromWire(value: unknown): unknown {
  const wire = asWire(value);
  return {
    ...wire,
    metadata: metadataFromWire(wire.metadata),
    setId: wire.setId ?? null,
    lastFailure: wire.lastFailure === null || wire.lastFailure === undefined ? null : failureFromWire(wire.lastFailure),
  };
}

function failureToWire(failure: Failure): object {
  return { ...failure };
}

function postSnapshotResponseFromWire(value: unknown): unknown {
  const wire = asWire(value);
  return {
    components: wireList(wire.components).map((component) => {
      const { partialFiles, ...rest } = component;
      return partialFiles === null || partialFiles === undefined
        ? rest
        : { ...rest, partialFiles: asWire(partialFiles).files };
    }),
  };
}

function postSnapshotResponseToWire(response: PostSnapshotResponse): object {
  return {
    components: response.components.map(({ partialFiles, ...rest }) =>
      partialFiles === undefined ? rest : { ...rest, partialFiles: { files: partialFiles } },
    ),
  };
}

/** Decoded messages whose shape is the model's shape. */
function same(value: unknown): unknown {
  return value;
}

const EmptySchema = z.object({});
type Empty = z.infer<typeof EmptySchema>;

/**
 * One unary rpc: how its request and response cross the wire, and which endpoint method it
 * runs. `Req`/`Res` are the model's shapes; `toWire` gives the object the proto serializer
 * takes, `fromWire` the candidate model object that the schema then validates.
 */
export interface UnaryMethod<Req, Res, E extends WriterEndpoint = WriterEndpoint> {
  readonly rpc: Exclude<AgentRpc, 'OpenSession'>;
  /** The phase a failure of this call is reported at (status is no phase). */
  readonly phase: Phase | null;
  readonly requestSchema: z.ZodType<Req, z.ZodTypeDef, unknown>;
  requestToWire(request: Req): object;
  requestFromWire(wire: unknown): unknown;
  readonly responseSchema: z.ZodType<Res, z.ZodTypeDef, unknown>;
  responseToWire(response: Res): object;
  responseFromWire(wire: unknown): unknown;
  invoke(endpoint: E, request: Req, options: CallOptions): Promise<Res>;
}

function method<Req, Res, E extends WriterEndpoint = WriterEndpoint>(
  spec: UnaryMethod<Req, Res, E>,
): UnaryMethod<Req, Res, E> {
  return spec;
}

/** An rpc whose request passes as it is and whose answer is empty. */
function emptyAnswerMethod<Req extends object>(
  rpc: 'PrepareSnapshot' | 'Freeze' | 'BackupComplete' | 'Abort' | 'Shutdown' | 'PreRestore' | 'PostRestore',
  phase: Phase,
  requestSchema: z.ZodType<Req, z.ZodTypeDef, unknown>,
  run: (endpoint: WriterEndpoint, request: Req, options: CallOptions) => Promise<void>,
) {
  return method<Req, Empty>({
    rpc,
    phase,
    requestSchema,
    requestToWire: (request) => ({ ...request }),
    requestFromWire: same,
    responseSchema: EmptySchema,
    responseToWire: () => ({}),
    responseFromWire: () => ({}),
    invoke: async (endpoint, request, options): Promise<Empty> => {
      await run(endpoint, request, options);
      return {};
    },
  });
}

/** Every unary rpc of WriterService, keyed by the endpoint method it carries. */
export const UNARY_METHODS = {
  identify: method<Empty, WriterMetadata>({
    rpc: 'Identify',
    phase: 'identify',
    requestSchema: EmptySchema,
    requestToWire: () => ({}),
    requestFromWire: () => ({}),
    responseSchema: WriterMetadataSchema,
    responseToWire: (metadata) => ({ metadata }),
    responseFromWire: (wire) => metadataFromWire(asWire(wire).metadata),
    invoke: (endpoint, _request, options) => endpoint.identify(options),
  }),
  status: method<Empty, WriterStatus>({
    rpc: 'Status',
    phase: null,
    requestSchema: EmptySchema,
    requestToWire: () => ({}),
    requestFromWire: () => ({}),
    responseSchema: WriterStatusSchema,
    responseToWire: (status) => ({
      ...status,
      lastFailure: status.lastFailure === null ? null : failureToWire(status.lastFailure),
    }),
    responseFromWire: statusFromWire,
    invoke: (endpoint, _request, options) => endpoint.status(options),
  }),
  prepareBackup: method({
    rpc: 'PrepareBackup',
    phase: 'prepare-backup',
    requestSchema: PrepareBackupRequestSchema,
    requestToWire: (request) => ({ ...request }),
    requestFromWire: same,
    responseSchema: PrepareBackupResponseSchema,
    responseToWire: (response) => ({ ...response }),
    responseFromWire: same,
    invoke: (endpoint, request, options) => endpoint.prepareBackup(request, options),
  }),
  prepareSnapshot: emptyAnswerMethod('PrepareSnapshot', 'prepare-snapshot', SetRequestSchema, (e, r, o) =>
    e.prepareSnapshot(r, o),
  ),
  freeze: emptyAnswerMethod('Freeze', 'freeze', FreezeRequestSchema, (e, r, o) => e.freeze(r, o)),
  thaw: method({
    rpc: 'Thaw',
    phase: 'thaw',
    requestSchema: SetRequestSchema,
    requestToWire: (request) => ({ ...request }),
    requestFromWire: same,
    responseSchema: ThawResponseSchema,
    responseToWire: (response) => ({ ...response }),
    responseFromWire: same,
    invoke: (endpoint, request, options) => endpoint.thaw(request, options),
  }),
  postSnapshot: method({
    rpc: 'PostSnapshot',
    phase: 'post-snapshot',
    requestSchema: PostSnapshotRequestSchema,
    requestToWire: (request) => ({ ...request }),
    requestFromWire: same,
    responseSchema: PostSnapshotResponseSchema,
    responseToWire: postSnapshotResponseToWire,
    responseFromWire: postSnapshotResponseFromWire,
    invoke: (endpoint, request, options) => endpoint.postSnapshot(request, options),
  }),
  backupComplete: emptyAnswerMethod('BackupComplete', 'backup-complete', BackupCompleteRequestSchema, (e, r, o) =>
    e.backupComplete(r, o),
  ),
  abort: emptyAnswerMethod('Abort', 'abort', SetRequestSchema, (e, r, o) => e.abort(r, o)),
  shutdown: emptyAnswerMethod('Shutdown', 'shutdown', SetRequestSchema, (e, r, o) => e.shutdown(r, o)),
  preRestore: emptyAnswerMethod('PreRestore', 'pre-restore', RestoreRequestSchema, (e, r, o) => e.preRestore(r, o)),
  postRestore: emptyAnswerMethod('PostRestore', 'post-restore', RestoreRequestSchema, (e, r, o) => e.postRestore(r, o)),
} as const;

export type UnaryMethodName = keyof typeof UNARY_METHODS;

const ReportResponseSchema = GuestReportSchema;

/** Levels of guest reports a Report may hold, its own included (guests of guests of …). */
export const MAX_GUEST_DEPTH = 32;

/**
 * How deep a guest report nests guests, counted without recursion and stopping past `limit`:
 * the schema is recursive (z.lazy), and a report nested thousands deep (a few bytes a level,
 * well within the message limit) would overflow the stack in the middle of validation.
 */
function guestDepth(report: unknown, limit: number): number {
  let level: unknown[] = [report];
  let depth = 0;
  while (level.length > 0 && depth <= limit) {
    depth += 1;
    const below: unknown[] = [];
    for (const guest of level) {
      const guests = isRecord(guest) ? guest.guests : undefined;
      if (Array.isArray(guests)) for (const inner of guests as unknown[]) below.push(inner);
    }
    level = below;
  }
  return depth;
}

/** AgentService's Report: the guest's report as JSON in a string field, validated on both ends. */
export const REPORT_METHOD = method<SetRequest, GuestReport, AgentEndpoint>({
  rpc: 'Report',
  phase: null,
  requestSchema: SetRequestSchema,
  requestToWire: (request) => ({ ...request }),
  requestFromWire: same,
  responseSchema: ReportResponseSchema,
  responseToWire: (report) => ({ reportJson: JSON.stringify(report) }),
  responseFromWire: (wire) => {
    const json = asWire(wire).reportJson;
    if (typeof json !== 'string') return null;
    let report: unknown;
    try {
      report = JSON.parse(json) as unknown;
    } catch {
      return null;
    }
    if (guestDepth(report, MAX_GUEST_DEPTH) > MAX_GUEST_DEPTH)
      throw new QuiesceError(
        'protocol',
        `the guest's report nests guests more than ${MAX_GUEST_DEPTH} levels deep; no set has that many`,
      );
    return report;
  },
  invoke: (endpoint, request, options) => endpoint.report(request, options),
});

/** The request of OpenSession. */
export const SessionRequestSchema = SetRequestSchema;

export const SESSION_EVENT_KINDS = ['opened', 'heartbeat'] as const;

/** One event of an OpenSession stream as the client validates it (unknown kinds are allowed and ignored). */
export const SessionEventSchema = z.object({
  kind: z.string().max(64),
  setId: z.string().max(128),
  heartbeatIntervalMs: z.number().int().nonnegative().max(3_600_000),
  sentAtMs: z.number().int(),
});
export type SessionEvent = z.infer<typeof SessionEventSchema>;

/** A zod error as one line naming the fields: `components.2.path: Required; setId: …`. */
export function describeZodError(error: z.ZodError): string {
  const shown = error.issues.slice(0, 5).map((issue) => {
    const field = issue.path.length > 0 ? issue.path.join('.') : '(message)';
    return `${field}: ${issue.message}`;
  });
  const more = error.issues.length - shown.length;
  return shown.join('; ') + (more > 0 ? ` (and ${more} more)` : '');
}

/** The failure JSON of the `quiesce-failure-bin` metadata, parsed and validated. */
export function parseFailureJson(json: string): Failure {
  return FailureSchema.parse(failureFromWire(JSON.parse(json)));
}
