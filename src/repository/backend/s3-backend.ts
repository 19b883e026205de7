import { createHash } from 'node:crypto';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { CallOptions } from '../../model/index.ts';
import { BackendError, type Backend, type LoadOptions, type ObjectInfo, type ObjectType } from './backend.ts';
import { CONFIG_NAME, describeObject, isObjectName, objectSegments } from './object-path.ts';
import { checkRange } from './range.ts';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3BackendOptions {
  /** An S3-compatible endpoint (`http://127.0.0.1:9000`); default `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS. */
  endpoint?: string;
  /** Default `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`. */
  region?: string;
  /** Default `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else the SDK's credential chain. */
  credentials?: S3Credentials;
  /** `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`; default true when an endpoint is set. */
  forcePathStyle?: boolean;
  /** Keys per ListObjectsV2 request, 1 to 1000 (the default). */
  listPageSize?: number;
  /** Read instead of `process.env` (tests). */
  env?: Record<string, string | undefined>;
}

function listPageSize(options: S3BackendOptions): number {
  const pageSize = options.listPageSize ?? 1000;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
    throw new BackendError(`listPageSize must be an integer from 1 to 1000, not ${pageSize}`);
  }
  return pageSize;
}

/** The key pair from the environment, when both halves are there (else the SDK's chain decides). */
function envCredentials(env: Record<string, string | undefined>): S3Credentials | undefined {
  const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY);
  const sessionToken = nonEmpty(env.AWS_SESSION_TOKEN);
  return accessKeyId !== undefined && secretAccessKey !== undefined
    ? { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) }
    : undefined;
}

function clientConfig(options: S3BackendOptions, env: Record<string, string | undefined>): S3ClientConfig {
  const endpoint = options.endpoint ?? nonEmpty(env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const credentials = options.credentials ?? envCredentials(env);
  return {
    region: options.region ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION) ?? 'us-east-1',
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(credentials === undefined ? {} : { credentials }),
    forcePathStyle: options.forcePathStyle ?? endpoint !== undefined,
    // RetryBackend retries, with the caller's signal; the SDK retrying underneath would multiply attempts.
    maxAttempts: 1,
    // Many S3-compatible stores reject the SDK's newer default checksum headers; we send Content-MD5.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
  };
}

/**
 * The object a key below a type's prefix names (`<2 hex>/<name>` for data, `<name>` for the
 * rest), or undefined for a key that is no object of ours.
 */
function objectNameOf(type: ObjectType, rest: string): string | undefined {
  const parts = rest.split('/');
  const name =
    type === 'data'
      ? parts.length === 2 && parts[0] === parts[1]?.slice(0, 2)
        ? parts[1]
        : undefined
      : parts.length === 1
        ? parts[0]
        : undefined;
  return name !== undefined && isObjectName(type, name) ? name : undefined;
}

/** `s3://bucket/prefix` split into its parts; throws a `BackendError` if it is not one. */
export function parseS3Location(location: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(location);
  const bucket = match?.[1];
  if (match === null || bucket === undefined || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new BackendError(
      `invalid S3 location ${JSON.stringify(location)}: expected s3://bucket or s3://bucket/prefix with a valid bucket name`,
    );
  }
  const prefix = (match[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix !== '' && prefix.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new BackendError(
      `invalid S3 location ${JSON.stringify(location)}: the prefix has an empty, "." or ".." part`,
    );
  }
  return { bucket, prefix };
}

/**
 * A repository under a prefix of an S3 bucket (AWS or any S3-compatible store: MinIO, Ceph
 * radosgw, s3rver), with the same key layout as `FsBackend`: `<prefix>/config`,
 * `<prefix>/data/<first 2 hex>/<name>`, `<prefix>/keys/<name>` and so on.
 *
 * Each save is one PutObject (atomic on S3: the whole object or none) with a Content-MD5 the
 * store checks. Nothing relies on conditional writes. The SDK's own retries are off: wrap this in
 * a `RetryBackend` (as `openBackend` does) for transient failures.
 *
 * @example
 * const backend = new S3Backend('s3://backups/host1', { endpoint: 'http://127.0.0.1:9000' });
 * for await (const { name, size } of backend.list('manifests')) console.log(name, size);
 */
export class S3Backend implements Backend {
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly pageSize: number;

  constructor(location: string, options: S3BackendOptions = {}) {
    const { bucket, prefix } = parseS3Location(location);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = prefix === '' ? `s3://${bucket}` : `s3://${bucket}/${prefix}`;
    this.pageSize = listPageSize(options);
    // The SDK warns on stderr that its releases after January 2027 need Node 22; the core never
    // prints, and the version we run is pinned.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client(clientConfig(options, options.env ?? process.env));
  }

  async save(type: ObjectType, name: string, data: Uint8Array, options: CallOptions = {}): Promise<void> {
    const key = this.keyOf(type, name);
    const { signal } = options;
    signal?.throwIfAborted();
    const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: createHash('md5').update(body).digest('base64'),
          ContentType: 'application/octet-stream',
        }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw this.failure(error, 'save', type, name, signal);
    }
  }

  async load(type: ObjectType, name: string, options: LoadOptions = {}): Promise<Buffer> {
    const key = this.keyOf(type, name);
    const object = describeObject(type, name);
    const range = checkRange(options, object);
    const { signal } = options;
    signal?.throwIfAborted();
    try {
      if (range?.length === 0) {
        const { size } = await this.stat(type, name, options);
        if (range.offset > size) throw this.shortRead(object, range.offset, range.length, size);
        return Buffer.alloc(0);
      }
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          ...(range === undefined ? {} : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` }),
        }),
        { abortSignal: signal },
      );
      const data = await readBody(response, signal);
      if (range === undefined) {
        if (response.ContentLength !== undefined && data.length !== response.ContentLength) {
          throw this.shortRead(object, 0, response.ContentLength, data.length);
        }
        return data;
      }
      // Servers may answer a Range with more than was asked (s3rver for `bytes=0-0`) or, as HTTP
      // allows, with the whole object: take the asked-for bytes from what came.
      const served = servedRange(response, range.offset, data.length);
      const from = range.offset - served.start;
      if (data.length !== served.length || from < 0 || from + range.length > data.length) {
        throw this.shortRead(object, range.offset, range.length, served.total);
      }
      return from === 0 && data.length === range.length ? data : Buffer.from(data.subarray(from, from + range.length));
    } catch (error) {
      if (range !== undefined && errorCode(error) === 'InvalidRange') {
        throw this.shortRead(object, range.offset, range.length, undefined, error);
      }
      throw this.failure(error, 'load', type, name, signal);
    }
  }

  async stat(type: ObjectType, name: string, options: CallOptions = {}): Promise<ObjectInfo> {
    const key = this.keyOf(type, name);
    const { signal } = options;
    signal?.throwIfAborted();
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: signal,
      });
      return { name, size: response.ContentLength ?? 0 };
    } catch (error) {
      throw this.failure(error, 'stat', type, name, signal);
    }
  }

  async *list(type: ObjectType, options: CallOptions = {}): AsyncGenerator<ObjectInfo> {
    const { signal } = options;
    signal?.throwIfAborted();
    if (type === 'config') {
      yield* this.listConfig(options);
      return;
    }
    const base = this.prefix === '' ? `${type}/` : `${this.prefix}/${type}/`;
    let token: string | undefined;
    do {
      const page = await this.listPage(type, base, token, signal);
      for (const entry of page.Contents ?? []) {
        const name = objectNameOf(type, entry.Key?.slice(base.length) ?? '');
        if (name !== undefined) yield { name, size: entry.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (page.IsTruncated === true && token === undefined) {
        throw new BackendError(
          `cannot list ${type} objects in ${this.location}: the store said the listing goes on but gave no continuation token`,
        );
      }
      signal?.throwIfAborted();
    } while (token !== undefined);
  }

  /** The config type has one object: listed when it is there. */
  private async *listConfig(options: CallOptions): AsyncGenerator<ObjectInfo> {
    try {
      yield await this.stat('config', CONFIG_NAME, options);
    } catch (error) {
      if (!(error instanceof BackendError && error.kind === 'not-found')) throw error;
    }
  }

  private async listPage(
    type: ObjectType,
    base: string,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ListObjectsV2CommandOutput> {
    try {
      return await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: base,
          MaxKeys: this.pageSize,
          ...(token === undefined ? {} : { ContinuationToken: token }),
        }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw this.failure(error, 'list', type, undefined, signal);
    }
  }

  async remove(type: ObjectType, name: string, options: CallOptions = {}): Promise<void> {
    const key = this.keyOf(type, name);
    const { signal } = options;
    signal?.throwIfAborted();
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
    } catch (error) {
      if (!signal?.aborted && isNotFound(error) && errorCode(error) !== 'NoSuchBucket') return;
      throw this.failure(error, 'remove', type, name, signal);
    }
  }

  async exists(options: CallOptions = {}): Promise<boolean> {
    try {
      await this.stat('config', CONFIG_NAME, options);
      return true;
    } catch (error) {
      if (error instanceof BackendError && error.kind === 'not-found') return false;
      throw error;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private keyOf(type: ObjectType, name: string): string {
    const path = objectSegments(type, name).join('/');
    return this.prefix === '' ? path : `${this.prefix}/${path}`;
  }

  private shortRead(
    object: string,
    offset: number,
    length: number,
    size: number | undefined,
    cause?: unknown,
  ): BackendError {
    return new BackendError(
      `load ${object} from ${this.location}: short read, wanted ${length} bytes at offset ${offset} but the object has ${size === undefined ? 'fewer' : size} bytes`,
      cause === undefined ? {} : { cause },
    );
  }

  /** Any error as what the contract promises: the abort reason, or a `BackendError` naming the object. */
  private failure(
    error: unknown,
    doing: 'save' | 'load' | 'stat' | 'list' | 'remove',
    type: ObjectType,
    name: string | undefined,
    signal: AbortSignal | undefined,
  ): unknown {
    if (signal?.aborted) return signal.reason;
    if (error instanceof BackendError) return error;
    const object = name === undefined ? `${type} objects` : describeObject(type, name);
    const code = errorCode(error);
    const status = httpStatus(error);
    if (code === 'NoSuchBucket') {
      return new BackendError(
        `cannot ${doing} ${object} in ${this.location}: the bucket ${this.bucket} does not exist; create it first`,
        { cause: error },
      );
    }
    if (isNotFound(error) && (doing === 'load' || doing === 'stat')) {
      return new BackendError(`${object} not found in ${this.location}`, { cause: error, kind: 'not-found' });
    }
    if (code === 'QuotaExceeded' || code === 'XMinioStorageFull' || code === 'InsufficientStorage' || status === 507) {
      return new BackendError(
        `cannot ${doing} ${object} in ${this.location}: the store is full or the bucket's quota is used up (${code ?? `HTTP ${status}`}). ` +
          'Nothing saved before was lost and no partial object was left; free some space (or prune old backups) and try again.',
        { cause: error, kind: 'no-space' },
      );
    }
    const detail = error instanceof Error ? error.message || error.name : String(error);
    const what = [
      code !== undefined && code !== detail ? code : undefined,
      status === undefined ? undefined : `HTTP ${status}`,
    ].filter((x) => x !== undefined);
    return new BackendError(
      `cannot ${doing} ${object} in ${this.location}: ${detail}${what.length > 0 ? ` (${what.join(', ')})` : ''}`,
      { cause: error },
    );
  }
}

/** Reads a GetObject body to the end; an abort of `signal` destroys the stream. */
async function readBody(response: GetObjectCommandOutput, signal: AbortSignal | undefined): Promise<Buffer> {
  const body: unknown = response.Body;
  if (body === undefined) return Buffer.alloc(0);
  if (typeof body !== 'object' || body === null || !(Symbol.asyncIterator in body)) {
    throw new BackendError('the S3 client returned a body that is not a Node stream');
  }
  const stream = body as AsyncIterable<Uint8Array> & { destroy?: (error?: Error) => void };
  const onAbort = (): void => stream.destroy?.(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(Buffer.from(chunk));
    signal?.throwIfAborted();
    return Buffer.concat(chunks);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Which bytes of the object a ranged GetObject answer holds, from its Content-Range (or a 200's whole object). */
function servedRange(
  response: GetObjectCommandOutput,
  asked: number,
  received: number,
): { start: number; length: number; total: number | undefined } {
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.ContentRange ?? '');
  if (match !== null) {
    const start = Number(match[1]);
    return { start, length: Number(match[2]) - start + 1, total: match[3] === '*' ? undefined : Number(match[3]) };
  }
  if (response.$metadata.httpStatusCode === 206)
    return { start: asked, length: response.ContentLength ?? received, total: undefined };
  return { start: 0, length: response.ContentLength ?? received, total: response.ContentLength ?? received };
}

/** The S3 error code (`NoSuchKey`, `SlowDown`, …) or the error's name. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { Code, name } = error as { Code?: unknown; name?: unknown };
  if (typeof Code === 'string') return Code;
  return typeof name === 'string' ? name : undefined;
}

/** The HTTP status an S3 error came with, if any. */
export function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('$metadata' in error)) return undefined;
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata;
  return typeof metadata?.httpStatusCode === 'number' ? metadata.httpStatusCode : undefined;
}

function isNotFound(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchBucket' || httpStatus(error) === 404;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
