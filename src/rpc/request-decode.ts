// What arrives at the server, made safe to handle: a request the proto decoder cannot read is
// marked rather than thrown, and every request is checked against the model's schema.
import type { ZodError } from 'zod';
import { messageOf } from '../util/index.ts';
import { describeZodError } from './convert.ts';
import type { WireMethod } from './writer-proto.ts';

/** Marks a request the proto decoder could not read, so the handler can answer INVALID_ARGUMENT. */
const UNDECODABLE = Symbol('undecodable');
interface Undecodable {
  [UNDECODABLE]: string;
}
function isUndecodable(value: unknown): value is Undecodable {
  return typeof value === 'object' && value !== null && UNDECODABLE in value;
}

/** The service with request decoders that never throw: gRPC would answer INTERNAL, we answer INVALID_ARGUMENT. */
export function tolerantService<R extends string>(service: Record<R, WireMethod>): Record<R, WireMethod> {
  const out: Partial<Record<R, WireMethod>> = {};
  for (const [rpc, definition] of Object.entries(service) as [R, WireMethod][]) {
    out[rpc] = {
      ...definition,
      requestDeserialize: (bytes: Buffer): object => {
        try {
          return definition.requestDeserialize(bytes);
        } catch (error) {
          const undecodable: Undecodable = { [UNDECODABLE]: messageOf(error) };
          return undecodable;
        }
      },
    };
  }
  return out as Record<R, WireMethod>;
}

/** Parse a decoded request with the model's schema; the problem, naming the field, on failure. */
export function parseRequest<T>(
  raw: unknown,
  fromWire: (wire: unknown) => unknown,
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: ZodError } },
): { ok: true; value: T } | { ok: false; problem: string } {
  if (isUndecodable(raw)) return { ok: false, problem: `not a valid protobuf message (${raw[UNDECODABLE]})` };
  const parsed = schema.safeParse(fromWire(raw));
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, problem: describeZodError(parsed.error) };
}
