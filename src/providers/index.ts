// Snapshot providers: the mechanisms that make the point-in-time copy (btrfs snapshots, reflink
// clones, fsfreeze plus copy, plain copy), and choosing one for a path.
import type { Provider } from '../model/index.ts';
import { BtrfsProvider } from './btrfs/btrfs-provider.ts';
import { CopyProvider } from './copy/copy-provider.ts';
import { FsfreezeProvider, type FsfreezeProviderOptions } from './fsfreeze/fsfreeze-provider.ts';
import { ReflinkProvider } from './reflink/reflink-provider.ts';

export { BtrfsProvider } from './btrfs/btrfs-provider.ts';
export { CopyProvider } from './copy/copy-provider.ts';
export { FsfreezeProvider, type FsfreezeProviderOptions } from './fsfreeze/fsfreeze-provider.ts';
export { HeldFreezeProvider, type HeldFreezeOptions } from './held-freeze/held-freeze-provider.ts';
export { ReflinkProvider } from './reflink/reflink-provider.ts';
export { SNAPSHOT_STORE } from './snapshot-layout.ts';
export { isFileSystemRoot } from './snapshot-store.ts';
export {
  chooseProvider,
  listProviderSupport,
  type ChooseOptions,
  type ProviderChoice,
  type ProviderSupportEntry,
} from './choose.ts';

export interface CreateProvidersOptions {
  fsfreeze?: FsfreezeProviderOptions;
}

/**
 * One instance of every provider, in preference order.
 *
 * @example
 * const { provider } = await chooseProvider('/srv/db', createProviders());
 */
export function createProviders(options: CreateProvidersOptions = {}): Provider[] {
  return [new BtrfsProvider(), new ReflinkProvider(), new FsfreezeProvider(options.fsfreeze), new CopyProvider()];
}
