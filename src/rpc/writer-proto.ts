/**
 * The writer service as loaded from proto/quiesce/v1/writer.proto at run time, and the
 * constants both ends of the wire agree on.
 */
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

/** The largest message either end sends or accepts, in bytes: 16 MiB. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Trailing metadata key whose value is the UTF-8 JSON of a failure (`QuiesceError.toJSON()`). */
export const FAILURE_METADATA_KEY = 'quiesce-failure-bin';

/** The fully qualified service name. */
export const WRITER_SERVICE = 'quiesce.v1.WriterService';

/** The proto root (the include directory) and the service's file under it. */
export const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
export const WRITER_PROTO_FILE = 'quiesce/v1/writer.proto';

/** The rpc names of WriterService, as in the .proto file. */
export const WRITER_RPCS = [
  'Identify',
  'Status',
  'PrepareBackup',
  'PrepareSnapshot',
  'Freeze',
  'Thaw',
  'PostSnapshot',
  'BackupComplete',
  'Abort',
  'Shutdown',
  'PreRestore',
  'PostRestore',
  'OpenSession',
] as const;
export type WriterRpc = (typeof WRITER_RPCS)[number];

/** A method of the loaded service: plain objects in, plain objects out (camelCase fields). */
export type WireMethod = grpc.MethodDefinition<object, object>;
export type WriterServiceDefinition = Record<WriterRpc, WireMethod>;

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  includeDirs: [PROTO_ROOT],
};

let cached: WriterServiceDefinition | undefined;

/**
 * The WriterService definition, loaded once. Decoded messages are plain objects with
 * camelCase fields, every non-optional scalar and list present (zero values), unset message
 * fields `null`, unset `optional` fields absent, and 64-bit integers as numbers.
 */
export function loadWriterService(): WriterServiceDefinition {
  if (cached) return cached;
  const definition = protoLoader.loadSync(WRITER_PROTO_FILE, LOADER_OPTIONS);
  const service = definition[WRITER_SERVICE];
  if (!service || !isServiceDefinition(service)) {
    throw new Error(`${WRITER_PROTO_FILE} under ${PROTO_ROOT} does not define ${WRITER_SERVICE}`);
  }
  const methods: Partial<Record<WriterRpc, WireMethod>> = {};
  for (const rpc of WRITER_RPCS) {
    const method = service[rpc];
    if (!method) throw new Error(`${WRITER_SERVICE} in ${WRITER_PROTO_FILE} lacks rpc ${rpc}`);
    methods[rpc] = method;
  }
  cached = methods as WriterServiceDefinition;
  return cached;
}

function isServiceDefinition(value: protoLoader.AnyDefinition): value is protoLoader.ServiceDefinition {
  return !('format' in value);
}
