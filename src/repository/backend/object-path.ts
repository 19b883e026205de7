import { BackendError, type ObjectType } from './backend.ts';

/** Object names: lowercase hex, at least two digits (data objects fan out on the first two). */
const NAME = /^[0-9a-f]{2,128}$/;

/** The one name the `config` type has. */
export const CONFIG_NAME = 'config';

/** Temp files (fs) start with this; they are never objects and never listed. */
export const TEMP_PREFIX = '.tmp-';

/** True if `name` is a name an object of `type` can have. */
export function isObjectName(type: ObjectType, name: string): boolean {
  return type === 'config' ? name === CONFIG_NAME : NAME.test(name);
}

/** Throws a `BackendError` unless `name` is a valid name for `type` (so no name can escape its folder). */
export function checkObjectName(type: ObjectType, name: string): void {
  if (!isObjectName(type, name)) {
    const expected = type === 'config' ? `"${CONFIG_NAME}"` : 'lowercase hex (at least 2 digits)';
    throw new BackendError(`invalid ${type} object name ${JSON.stringify(name)}: expected ${expected}`);
  }
}

/**
 * Where an object lives relative to the repository root, as path segments:
 * `config`, `keys/<name>`, `data/<first 2 hex>/<name>`, `index/<name>`, `manifests/<name>`, `locks/<name>`.
 */
export function objectSegments(type: ObjectType, name: string): string[] {
  checkObjectName(type, name);
  if (type === 'config') return [CONFIG_NAME];
  if (type === 'data') return ['data', name.slice(0, 2), name];
  return [type, name];
}

/** `type/name` for messages (`config` alone for the config). */
export function describeObject(type: ObjectType, name: string): string {
  return type === 'config' ? CONFIG_NAME : `${type}/${name}`;
}
