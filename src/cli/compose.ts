// Composition happens here, and only here: config entries become concrete writers (in-process
// runtimes or gRPC clients) and the providers are chosen per path.
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Config, WriterConfig } from '../config/index.ts';
import type { ResolvedProvider, SetWriter } from '../coordinator/index.ts';
import {
  QuiesceError,
  type Provider,
  type ProviderName,
  type QuiescePolicy,
  type WriterEndpoint,
} from '../model/index.ts';
import { chooseProvider, createProviders } from '../providers/index.ts';
import { createGuestWriter } from '../writers/guest/index.ts';
import { createQgaGuest } from '../writers/qga/index.ts';
import { createExecWriter } from '../writers/exec/index.ts';
import { createWriterRuntime } from '../writers/sdk/index.ts';
import { createSqliteWriter } from '../writers/sqlite/index.ts';

export interface ComposedWriter extends SetWriter {
  type: WriterConfig['type'] | 'registered' | 'guest';
}

/**
 * The wire (gRPC and its protobuf loader) loads only for a config that reaches out of process:
 * it costs about a third of a second at start, which every local backup would otherwise pay.
 */
const loadRpc = () => import('../rpc/index.ts');

/** The endpoint for one configured writer. */
export async function writerEndpoint(config: WriterConfig, root: Config): Promise<WriterEndpoint> {
  switch (config.type) {
    case 'sqlite':
      return createWriterRuntime(
        createSqliteWriter({
          name: config.name,
          path: config.path,
          usage: config.usage,
          honorFull: config.honorFull,
          stateDir: join(root.stateDir, 'writers'),
          lockTimeoutMs: config.lockTimeout,
        }),
      );
    case 'exec':
      return createWriterRuntime(
        createExecWriter({
          name: config.name,
          prepare: config.prepare,
          freeze: config.freeze,
          thaw: config.thaw,
          hooksDir: config.hooksDir,
          paths: config.paths,
          timeoutMs: config.timeout,
          usage: config.usage,
        }),
      );
    case 'remote':
      return (await loadRpc()).connectWriter(config.socket ?? join(root.registrationDir, `${config.name}.sock`), {
        callTimeoutMs: root.policy.freezeTimeout,
      });
    default:
      return config satisfies never;
  }
}

/**
 * Every writer of the config, plus every writer registered by socket in the registration
 * directory that the config does not name (out-of-process writers announce themselves that way).
 */
export async function composeWriters(config: Config, overridePolicy?: QuiescePolicy): Promise<ComposedWriter[]> {
  const writers: ComposedWriter[] = [];
  for (const w of config.writers) {
    writers.push({
      type: w.type,
      name: w.name,
      policy: overridePolicy ?? w.quiesce ?? config.policy.quiesce,
      endpoint: await writerEndpoint(w, config),
    });
  }
  const named = new Set(config.writers.map((w) => w.name));
  const claimed = new Set(config.writers.flatMap((w) => (w.type === 'remote' && w.socket ? [w.socket] : [])));
  for (const socket of await registeredSockets(config.registrationDir)) {
    const name = basename(socket, '.sock');
    if (named.has(name) || claimed.has(socket)) continue;
    writers.push({
      type: 'registered',
      name,
      policy: overridePolicy ?? config.policy.quiesce,
      endpoint: (await loadRpc()).connectWriter(socket, { callTimeoutMs: config.policy.freezeTimeout }),
    });
  }
  writers.push(...(await composeGuests(config, overridePolicy)));
  return writers;
}

/**
 * One writer per guest: through its quiesce agent (mutual TLS, pinned certificate), through
 * the QEMU guest agent on its socket, or none at all (crash-consistent, policy `off`).
 */
export async function composeGuests(config: Config, overridePolicy?: QuiescePolicy): Promise<ComposedWriter[]> {
  const rpc = config.guests.some((g) => g.agent?.startsWith('tls:')) ? await loadRpc() : null;
  const identity = rpc && config.tls ? await rpc.loadIdentity(config.tls) : null;
  return Promise.all(
    config.guests.map(async (guest): Promise<ComposedWriter> => {
      const policy = overridePolicy ?? guest.quiesce ?? config.policy.quiesce;
      if (guest.agent === undefined) {
        return {
          type: 'guest',
          name: guest.name,
          policy: 'off',
          endpoint: createGuestWriter({
            name: guest.name,
            disks: guest.disks,
            agent: null,
            honorFull: guest.honorFull,
          }),
        };
      }
      if (guest.agent.startsWith('qga:')) {
        const socket = decodeURIComponent(new URL(guest.agent).pathname);
        const endpoint = createQgaGuest({
          name: guest.name,
          socket,
          disks: guest.disks,
          mountpoints: guest.mountpoints,
        });
        return { type: 'guest', name: guest.name, policy, endpoint };
      }
      if (!rpc || !identity || !guest.certificate) {
        throw new QuiesceError(
          'bad-config',
          `guest ${guest.name}: a quiesce agent needs tls: { key, cert } and the guest's certificate pinned`,
          { writer: guest.name },
        );
      }
      const agent = rpc.connectAgent(guest.agent, {
        identity,
        pinned: await rpc.readPem(guest.certificate, `certificate of guest ${guest.name}`),
        callTimeoutMs: config.policy.freezeTimeout,
        // A guest that vanishes (killed agent, cut network) is noticed within about three seconds.
        keepaliveTimeMs: 2000,
      });
      return {
        type: 'guest',
        name: guest.name,
        policy,
        endpoint: createGuestWriter({ name: guest.name, disks: guest.disks, agent, honorFull: guest.honorFull }),
      };
    }),
  );
}

async function registeredSockets(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const names = await readdir(dir);
  return names
    .filter((n) => n.endsWith('.sock'))
    .sort()
    .map((n) => join(dir, n));
}

/** Picks the provider for each path: the config's forced choice, else the best that supports it. */
export function providerResolver(
  config: Config,
  providers: Provider[] = createProviders(),
  forced?: ProviderName,
): (path: string) => Promise<ResolvedProvider> {
  const cache = new Map<string, Promise<ResolvedProvider>>();
  return (path: string) => {
    let resolved = cache.get(path);
    if (!resolved) {
      const force = forced ?? forcedFor(config, path);
      resolved = chooseProvider(path, providers, force ? { force } : {}).then((choice) => ({
        provider: choice.provider,
        level: choice.support.level,
      }));
      cache.set(path, resolved);
    }
    return resolved;
  };
}

/** The provider forced for a path or its nearest configured ancestor. */
export function forcedFor(config: Pick<Config, 'providers'>, path: string): ProviderName | undefined {
  let best: string | undefined;
  for (const key of Object.keys(config.providers)) {
    if ((path === key || path.startsWith(`${key}/`)) && (!best || key.length > best.length)) best = key;
  }
  return best === undefined ? undefined : config.providers[best];
}

export async function closeWriters(writers: SetWriter[]): Promise<void> {
  await Promise.all(writers.map((w) => w.endpoint.close().catch(() => undefined)));
}
