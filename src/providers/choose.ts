import { PROVIDER_NAMES, QuiesceError } from '../model/index.ts';
import type { CallOptions, Provider, ProviderName, ProviderSupport } from '../model/index.ts';
import { messageOf } from '../util/index.ts';

/** One provider's answer for a path. */
export interface ProviderSupportEntry {
  name: ProviderName;
  support: ProviderSupport;
}

export interface ProviderChoice {
  provider: Provider;
  support: ProviderSupport;
  /** The providers preferred over the chosen one, and why each could not take the path. */
  rejected: ProviderSupportEntry[];
}

export interface ChooseOptions extends CallOptions {
  /** Use this provider or fail; no fallback. */
  force?: ProviderName;
}

/**
 * Every provider's support for `path`, in preference order (btrfs, reflink, fsfreeze, copy).
 * A provider whose check throws is reported as not supporting the path.
 *
 * @example
 * for (const { name, support } of await listProviderSupport('/var/lib/app', createProviders())) {
 *   console.log(name, support.ok ? 'yes' : 'no', support.reason);
 * }
 */
export async function listProviderSupport(
  path: string,
  providers: readonly Provider[],
  options: CallOptions = {},
): Promise<ProviderSupportEntry[]> {
  return Promise.all(
    inPreferenceOrder(providers).map(async (provider) => ({
      name: provider.name,
      support: await checkSupport(provider, path, options),
    })),
  );
}

/**
 * The most preferred provider that supports `path`, with the reasons of those preferred over it.
 * Throws `provider-failed` when none does, or when the forced one does not; `bad-usage` when the
 * forced one is not among `providers`.
 *
 * @example
 * const { provider, rejected } = await chooseProvider('/srv/db', createProviders());
 * // provider.name === 'reflink' on XFS; rejected[0].support.reason says why not btrfs
 */
export async function chooseProvider(
  path: string,
  providers: readonly Provider[],
  options: ChooseOptions = {},
): Promise<ProviderChoice> {
  if (options.force !== undefined) {
    const provider = providers.find((p) => p.name === options.force);
    if (provider === undefined) {
      throw new QuiesceError(
        'bad-usage',
        `there is no provider named ${options.force}; use one of ${providers.map((p) => p.name).join(', ')}.`,
      );
    }
    const support = await checkSupport(provider, path, options);
    if (!support.ok) {
      throw new QuiesceError(
        'provider-failed',
        `the ${provider.name} provider cannot snapshot ${path}: ${support.reason}. Choose another provider or none to pick one automatically.`,
      );
    }
    return { provider, support, rejected: [] };
  }
  const rejected: ProviderSupportEntry[] = [];
  for (const provider of inPreferenceOrder(providers)) {
    const support = await checkSupport(provider, path, options);
    if (support.ok) return { provider, support, rejected };
    rejected.push({ name: provider.name, support });
  }
  const reasons = rejected.map((entry) => `${entry.name}: ${entry.support.reason}`).join('; ');
  throw new QuiesceError(
    'provider-failed',
    `no provider can snapshot ${path} (${reasons}); enable the copy provider or move the data.`,
  );
}

function inPreferenceOrder(providers: readonly Provider[]): Provider[] {
  const rank = (name: ProviderName): number => (PROVIDER_NAMES as readonly ProviderName[]).indexOf(name);
  return [...providers].sort((a, b) => rank(a.name) - rank(b.name));
}

async function checkSupport(provider: Provider, path: string, options: CallOptions): Promise<ProviderSupport> {
  try {
    return await provider.supports(path, options);
  } catch (error) {
    if (options.signal?.aborted) throw QuiesceError.from(error, 'provider-failed');
    return { ok: false, reason: `checking failed: ${messageOf(error)}`, level: 'crash' };
  }
}
