/**
 * The writer service as loaded from proto/quiesce/v1/writer.proto at run time, and the
 * constants both ends of the wire agree on.
 */
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../package-root.ts';

/** The largest message either end sends or accepts, in bytes: 16 MiB. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Trailing metadata key whose value is the UTF-8 JSON of a failure (`QuiesceError.toJSON()`). */
export const FAILURE_METADATA_KEY = 'quiesce-failure-bin';

/** The fully qualified service names. */
export const WRITER_SERVICE = 'quiesce.v1.WriterService';
export const AGENT_SERVICE = 'quiesce.v1.AgentService';

/** The proto root (the include directory) and the service's file under it. */
export const PROTO_ROOT = join(PACKAGE_ROOT, 'proto');
export const WRITER_PROTO_FILE = 'quiesce/v1/writer.proto';
export const AGENT_PROTO_FILE = 'quiesce/v1/agent.proto';

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

/** AgentService: every rpc of WriterService, and Report. */
export const AGENT_RPCS = [...WRITER_RPCS, 'Report'] as const;
export type AgentRpc = (typeof AGENT_RPCS)[number];

/** A method of the loaded service: plain objects in, plain objects out (camelCase fields). */
export type WireMethod = grpc.MethodDefinition<object, object>;
export type WriterServiceDefinition = Record<WriterRpc, WireMethod>;
export type AgentServiceDefinition = Record<AgentRpc, WireMethod>;

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  includeDirs: [PROTO_ROOT],
};

const cached = new Map<string, Record<string, WireMethod>>();

/**
 * A service definition, loaded once. Decoded messages are plain objects with camelCase fields,
 * every non-optional scalar and list present (zero values), unset message fields `null`, unset
 * `optional` fields absent, and 64-bit integers as numbers.
 */
function loadService<R extends string>(file: string, name: string, rpcs: readonly R[]): Record<R, WireMethod> {
  const hit = cached.get(name);
  if (hit) return hit;
  const definition = protoLoader.loadSync(file, LOADER_OPTIONS);
  const service = definition[name];
  if (!service || !isServiceDefinition(service)) {
    throw new Error(`${file} under ${PROTO_ROOT} does not define ${name}`);
  }
  const methods: Partial<Record<R, WireMethod>> = {};
  for (const rpc of rpcs) {
    const method = service[rpc];
    if (!method) throw new Error(`${name} in ${file} lacks rpc ${rpc}`);
    methods[rpc] = method;
  }
  cached.set(name, methods as Record<string, WireMethod>);
  return methods as Record<R, WireMethod>;
}

/** The WriterService definition (writer.proto). */
export function loadWriterService(): WriterServiceDefinition {
  return loadService(WRITER_PROTO_FILE, WRITER_SERVICE, WRITER_RPCS);
}

/** The AgentService definition (agent.proto): WriterService's rpcs under another name, and Report. */
export function loadAgentService(): AgentServiceDefinition {
  return loadService(AGENT_PROTO_FILE, AGENT_SERVICE, AGENT_RPCS);
}

function isServiceDefinition(value: protoLoader.AnyDefinition): value is protoLoader.ServiceDefinition {
  return !('format' in value);
}
