/**
 * The agent wire: AgentService (proto/quiesce/v1/agent.proto) over TCP with mutual TLS. Both
 * ends pin the other's self-signed certificate: the agent trusts only the host certificates
 * its config names, the host trusts only the certificate it pinned for that guest (checked by
 * SHA-256 fingerprint, whatever name or address it carries). A peer without a pinned
 * certificate fails the TLS handshake and never reaches an rpc; guarded-listener.ts makes that
 * handshake, with timeouts and per-peer limits, before gRPC sees the connection.
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import {
  QuiesceError,
  type AgentEndpoint,
  type CallOptions,
  type GuestReport,
  type SetRequest,
} from '../model/index.ts';
import { messageOf } from '../util/index.ts';
import { REPORT_METHOD, UNARY_METHODS, type UnaryMethod } from './convert.ts';
import { connectOver, type ConnectWriterOptions, type RemoteWriterEndpoint } from './writer-client.ts';
import { connectionLimits, type ConnectionLimits } from './connection-limits.ts';
import { buildEndpointServer } from './endpoint-server.ts';
import { listenGuarded } from './guarded-listener.ts';
import type { ServeWriterOptions, WriterServer } from './writer-server.ts';
import { loadAgentService } from './writer-proto.ts';

/** A key and its certificate, PEM. */
export interface TlsIdentity {
  key: Buffer;
  cert: Buffer;
}

/** The SHA-256 fingerprint of a PEM certificate, as `AB:CD:…` (what `openssl x509 -fingerprint -sha256` prints). */
export function certificateFingerprint(pem: Buffer | string): string {
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch (error) {
    throw new QuiesceError('bad-config', `not a PEM certificate: ${messageOf(error)}`, { cause: error });
  }
}

export interface ServeAgentOptions extends ServeWriterOptions {
  /** This agent's key and certificate. */
  identity: TlsIdentity;
  /** The certificates of the hosts allowed to call (PEM, one or more). */
  trusted: Buffer[];
  /** The process's file-descriptor limit, which sizes the connection limits. Default 1024. */
  openFiles?: number;
  /** Overrides of the limits `connectionLimits(openFiles)` gives. */
  limits?: Partial<ConnectionLimits>;
}

export interface AgentServer extends WriterServer {
  port: number;
  limits: ConnectionLimits;
}

/**
 * Serve a guest on `listen` (`host:port`; port 0 picks one) over mutual TLS.
 *
 * @example
 * const server = await serveAgent(runtime, '0.0.0.0:7443', { identity, trusted: [hostCert] });
 */
export async function serveAgent(
  endpoint: AgentEndpoint,
  listen: string,
  options: ServeAgentOptions,
): Promise<AgentServer> {
  if (options.trusted.length === 0) {
    throw new QuiesceError(
      'bad-config',
      'the agent trusts no host certificate: name the host certificate(s) to pin in the agent config (tls.hosts)',
    );
  }
  for (const cert of options.trusted) certificateFingerprint(cert);
  const limits = { ...connectionLimits(options.openFiles ?? 1024), ...options.limits };
  const methods = [...Object.values(UNARY_METHODS), REPORT_METHOD] as UnaryMethod<unknown, unknown, AgentEndpoint>[];
  const core = buildEndpointServer(endpoint, loadAgentService(), methods, {
    ...options,
    maxConnectionIdleMs: limits.idleTimeoutMs,
  });
  // The TLS is already made (and the peer authenticated) when gRPC gets the connection.
  const injector = core.server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  let listener;
  try {
    listener = await listenGuarded(listen, {
      identity: options.identity,
      trusted: options.trusted,
      limits,
      onAuthenticated: (socket) => injector.injectConnection(socket),
    });
  } catch (error) {
    core.server.forceShutdown();
    throw error;
  }
  const shutdown = async () => {
    listener.stopAccepting();
    await core.stop();
    listener.destroyAll();
  };
  let closing: Promise<void> | undefined;
  return { address: listen, port: listener.port, limits, close: () => (closing ??= shutdown()) };
}

/** A guest's agent as the host sees it. */
export interface RemoteAgentEndpoint extends RemoteWriterEndpoint {
  report(request: SetRequest, options?: CallOptions): Promise<GuestReport>;
}

export interface ConnectAgentOptions extends ConnectWriterOptions {
  /** The host's own key and certificate. */
  identity: TlsIdentity;
  /** The guest's certificate: the only one accepted from that address. */
  pinned: Buffer;
}

/**
 * Connect to the agent at `address` (`host:port`, or `tls://host:port`).
 *
 * @example
 * const guest = connectAgent('tls://10.0.0.5:7443', { identity, pinned: guestCert, callTimeoutMs: 60_000 });
 */
export function connectAgent(address: string, options: ConnectAgentOptions): RemoteAgentEndpoint {
  const target = address.replace(/^tls:\/\//, '').replace(/\/$/, '');
  const expected = certificateFingerprint(options.pinned);
  const credentials = grpc.credentials.createSsl(options.pinned, options.identity.key, options.identity.cert, {
    // Pinning replaces name checks: the guest is whoever holds the pinned certificate's key.
    checkServerIdentity: (_host, certificate) =>
      certificate.fingerprint256 === expected
        ? undefined
        : new Error(
            `the agent at ${target} presented certificate ${certificate.fingerprint256}, not the pinned ${expected}`,
          ),
  });
  const { endpoint, invoke } = connectOver(`dns:${target}`, credentials, loadAgentService(), options, {
    // The certificate carries the guest's name, not its address; the pin is what is checked.
    'grpc.ssl_target_name_override': 'quiesce-agent',
    'grpc.default_authority': 'quiesce-agent',
  });
  return {
    ...endpoint,
    address: `tls://${target}`,
    report: (request, callOptions) => invoke(REPORT_METHOD, request, callOptions),
  };
}
