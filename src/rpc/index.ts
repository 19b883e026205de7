// The writer wire: WriterService (proto/quiesce/v1/writer.proto) over gRPC on Unix sockets,
// served from any WriterEndpoint and consumed as one; messages validated and size-limited.
export {
  serveWriter,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  type ServeWriterOptions,
  type WriterServer,
} from './writer-server.ts';
export {
  connectWriter,
  type ConnectWriterOptions,
  type RemoteWriterEndpoint,
  type RemoteWriterSession,
} from './writer-client.ts';
export { grpcStatusForFailure } from './failure-status.ts';
export {
  FAILURE_METADATA_KEY,
  MAX_MESSAGE_BYTES,
  PROTO_ROOT,
  WRITER_PROTO_FILE,
  WRITER_SERVICE,
  loadWriterService,
  loadAgentService,
  AGENT_SERVICE,
} from './writer-proto.ts';
export {
  serveAgent,
  connectAgent,
  certificateFingerprint,
  type TlsIdentity,
  type ServeAgentOptions,
  type ConnectAgentOptions,
  type RemoteAgentEndpoint,
  type AgentServer,
} from './agent-wire.ts';
export {
  connectionLimits,
  peerOf,
  HANDSHAKE_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  type ConnectionLimits,
} from './connection-limits.ts';
export { makeIdentity, loadIdentity, readPem, type IdentityFiles } from './certificates.ts';
export { type AgentEndpoint } from '../model/index.ts';
