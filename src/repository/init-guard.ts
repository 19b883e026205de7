import { QuiesceError, type CallOptions } from '../model/index.ts';
import { OBJECT_TYPES, type Backend, type ObjectType } from './backend/backend.ts';

/** What each object kind is called in a message. */
const KIND_NAMES: Record<ObjectType, string> = {
  config: 'config',
  keys: 'key files',
  data: 'packs',
  index: 'index objects',
  manifests: 'manifests',
  locks: 'locks',
};

/**
 * Refuses to `init` a location that holds any repository object, not only a config: a location
 * whose config was deleted still has the keys, packs and manifests of a repository, and a second
 * master secret written beside them would leave every old manifest unreadable.
 */
export async function assertNoRepositoryObjects(backend: Backend, options: CallOptions = {}): Promise<void> {
  if (await backend.exists(options)) {
    throw new QuiesceError(
      'bad-usage',
      `there is already a repository at ${backend.location}: open it instead of running init`,
    );
  }
  const found: string[] = [];
  for (const type of OBJECT_TYPES) {
    if (type === 'config') continue;
    const first = await firstObject(backend, type, options);
    if (first !== null) found.push(`${KIND_NAMES[type]} (${type}/${first})`);
  }
  if (found.length === 0) return;
  throw new QuiesceError(
    'bad-usage',
    `${backend.location} has no config but holds objects of a repository: ${found.join(', ')}. ` +
      'init would write a new master secret beside them and leave them unreadable: if this is a repository whose config was lost, ' +
      'put its config back (from a copy of the repository); to start afresh, give init an empty location or remove these objects first',
  );
}

async function firstObject(backend: Backend, type: ObjectType, options: CallOptions): Promise<string | null> {
  for await (const info of backend.list(type, options)) return info.name;
  return null;
}
