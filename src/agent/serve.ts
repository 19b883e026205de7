import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/index.ts';
import type { SetWriter } from '../coordinator/index.ts';
import { QuiesceError, type SetEvent } from '../model/index.ts';
import type { ConnectionLimits } from '../rpc/index.ts';
import { createAgentEndpoint } from './agent-endpoint.ts';
import { raiseOpenFilesLimit, type OpenFilesLimit } from './open-files.ts';

export interface AgentSettings {
  name?: string;
  listen: string;
  /** PEM files of the hosts allowed to call. */
  hosts: string[];
  tls: { key: string; cert: string };
  writers: SetWriter[];
  paths: string[];
  stateDir: string;
  stagingDir: string;
  freezeTimeoutMs: number;
  freezeFilesystems: boolean;
  freezeRoot: boolean;
  onEvent?: (event: SetEvent) => void;
  onError?: (error: unknown) => void;
  /** Overrides of the connection limits the file-descriptor limit gives (tests). */
  limits?: Partial<ConnectionLimits>;
}

/** The settings a config with `agent:` and `tls:` sections gives, for these writers. */
export function agentSettings(config: Config, writers: SetWriter[]): AgentSettings {
  if (!config.agent || !config.tls) {
    throw new QuiesceError(
      'bad-config',
      'the config has no agent: section (with hosts:) and tls: { key, cert }; run quiesce agent --init first',
    );
  }
  return {
    name: config.agent.name,
    listen: config.agent.listen,
    hosts: config.agent.hosts,
    tls: config.tls,
    writers,
    paths: config.paths,
    stateDir: config.stateDir,
    stagingDir: config.stagingDir,
    freezeTimeoutMs: config.policy.freezeTimeout,
    freezeFilesystems: config.agent.freezeFilesystems,
    freezeRoot: config.agent.freezeRoot,
  };
}

export interface RunningAgent {
  name: string;
  /** `host:port` as bound (the port filled in when 0 was asked). */
  address: string;
  /** The file-descriptor limit in force (raised to the hard limit at start), when known. */
  openFiles: OpenFilesLimit | undefined;
  /** How many connections it holds and how long (see README, "The agent's limits"). */
  limits: ConnectionLimits;
  close(): Promise<void>;
}

/**
 * Start a guest's agent: its writers behind a guest runtime, served over mutual TLS to the
 * pinned hosts. Stops with `close()`, which ends any set in progress (thawing everything).
 */
export async function startAgent(settings: AgentSettings): Promise<RunningAgent> {
  // The wire (gRPC) loads only when an agent starts: every other command starts faster without it.
  const { loadIdentity, readPem, serveAgent } = await import('../rpc/index.ts');
  const name = settings.name ?? hostname().split('.')[0] ?? 'guest';
  const [identity, trusted, openFiles] = await Promise.all([
    loadIdentity(settings.tls),
    Promise.all(settings.hosts.map((file) => readPem(file, 'host certificate'))),
    raiseOpenFilesLimit(),
  ]);
  const runtime = createAgentEndpoint({
    name,
    writers: settings.writers,
    paths: settings.paths,
    stateDir: join(settings.stateDir, 'agent'),
    stagingDir: settings.stagingDir,
    freezeTimeoutMs: settings.freezeTimeoutMs,
    freezeFilesystems: settings.freezeFilesystems,
    freezeRoot: settings.freezeRoot,
    onEvent: settings.onEvent,
  });
  let server;
  try {
    server = await serveAgent(runtime, settings.listen, {
      identity,
      trusted,
      openFiles: openFiles?.soft,
      limits: settings.limits,
      onError: settings.onError,
      // A host that vanishes (killed, network cut) is noticed within about three seconds.
      keepaliveTimeMs: 2000,
      keepaliveTimeoutMs: 1000,
      heartbeatIntervalMs: 1000,
    });
  } catch (error) {
    await runtime.close();
    throw QuiesceError.from(error, 'bad-config');
  }
  const host = settings.listen.slice(0, settings.listen.lastIndexOf(':'));
  return {
    name,
    address: `${host}:${server.port}`,
    openFiles,
    limits: server.limits,
    close: async () => {
      await server.close();
      await runtime.close();
    },
  };
}
