// The catalog: backup sets, their chains and stamps, derived from the repository's manifests
// and cached in a local SQLite file that can always be rebuilt.
export { Catalog, type CatalogEntry } from './catalog.ts';
export { proveCatalogCache } from './catalog-cache.ts';
export { BackupMetaSchema, ComponentRecordSchema, type BackupMeta, type ComponentRecord } from './manifest-meta.ts';
export { selectForget, type ForgetPolicy, type ForgetDecision } from './forget-policy.ts';
