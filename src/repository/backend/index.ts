// Where a repository's objects live: a local directory or an S3 bucket prefix, behind one
// Backend interface, with retry as a wrapper of the same interface; openBackend picks one.
export { BackendError, OBJECT_TYPES, type BackendErrorKind } from './backend.ts';
export type { Backend, LoadOptions, ObjectInfo, ObjectType } from './backend.ts';
export { FsBackend } from './fs-backend.ts';
export { S3Backend, parseS3Location } from './s3-backend.ts';
export type { S3BackendOptions, S3Credentials } from './s3-backend.ts';
export { RetryBackend, isTransient } from './retry-backend.ts';
export type { RetryEvent, RetryOptions } from './retry-backend.ts';
export { openBackend } from './open-backend.ts';
export type { OpenBackendOptions } from './open-backend.ts';
export { MemoryBackend } from './memory-backend.ts';
