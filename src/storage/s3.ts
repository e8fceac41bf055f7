import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
  type HeadObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Logger } from 'pino';
import type { S3StorageConfig } from '../config/index.js';
import { MAX_PATH_BYTES } from '../paths.js';
import {
  baseName,
  parentPath,
  StorageError,
  type FileInfo,
  type ReadOptions,
  type Storage,
  type StorageCapabilities,
  type StorageErrorCode,
  type StoragePath,
  type WriteOptions,
  type WriteResult,
} from './types.js';

/** S3 refuses a single CopyObject above 5 GiB; larger objects need a multipart copy. */
const MAX_SINGLE_COPY_BYTES = 5 * 1024 ** 3;
const MAX_PARTS = 10_000;
/** DeleteObjects takes at most 1000 keys per request. */
const DELETE_BATCH = 1000;
/** Parallel server-side copies of objects during a directory rename. */
const COPY_CONCURRENCY = 8;
/** Parallel UploadPartCopy calls within one large object's copy (nested inside COPY_CONCURRENCY). */
const PART_COPY_CONCURRENCY = 4;
const EPOCH = new Date(0);

/** Optional S3Storage settings; the defaults suit production. */
export interface S3StorageOptions {
  logger?: Logger;
  /** MaxKeys per ListObjectsV2 page; tests lower it to exercise paging. */
  pageSize?: number;
  /** Objects larger than this are copied part by part; tests lower it. */
  multipartCopyThreshold?: number;
}

/** A Storage on an S3 bucket under a key prefix; directories are key prefixes kept alive by `dir/` markers. */
export class S3Storage implements Storage {
  readonly capabilities: StorageCapabilities = { resumeUpload: true };
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly pageSize: number | undefined;
  private readonly multipartCopyThreshold: number;

  constructor(
    private readonly config: S3StorageConfig,
    options: S3StorageOptions = {},
  ) {
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.logger = options.logger;
    this.pageSize = options.pageSize;
    this.multipartCopyThreshold = options.multipartCopyThreshold ?? MAX_SINGLE_COPY_BYTES;
    this.client = new S3Client(clientConfig(config));
  }

  async stat(path: StoragePath): Promise<FileInfo> {
    if (path === '') return { name: '', isDirectory: true, size: 0, mtime: EPOCH };
    const info = await this.lookup(path);
    if (!info) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return info;
  }

  async *list(path: StoragePath, signal?: AbortSignal): AsyncIterable<FileInfo[]> {
    const prefix = this.dirPrefix(path);
    let token: string | undefined;
    let first = true;
    do {
      const page = await this.listPage(prefix, '/', token, signal);
      if (first && path !== '' && !pageHasKeys(page)) {
        // An empty first page means no directory; tell a file apart for the client.
        if (await this.headFile(this.key(path))) {
          throw new StorageError('NotADirectory', `not a directory: ${path}`);
        }
        throw new StorageError('NotFound', `no such directory: ${path}`);
      }
      first = false;
      yield entriesOf(page, prefix);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async read(path: StoragePath, options: ReadOptions = {}): Promise<Readable> {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StorageError('InvalidRange', `bad offset ${start}`);
    const key = this.key(path);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: start > 0 ? `bytes=${start}-` : undefined }),
        { abortSignal: options.signal },
      );
      return out.Body as Readable;
    } catch (err) {
      const error = classify(err, `read ${path}`);
      if (error.code === 'NotFound') throw await this.notFileError(path, error);
      if (error.code !== 'InvalidRange') throw error;
      // S3 answers 416 for start == size too; that one is a valid, empty read.
      const head = await this.headFile(key);
      if (head && (head.ContentLength ?? 0) === start) return Readable.from([]);
      throw error;
    }
  }

  // Takes ownership of body. An aborted write rejects with StorageError('Unavailable', 'write aborted').
  async write(path: StoragePath, body: Readable, options: WriteOptions = {}): Promise<WriteResult> {
    const { signal } = options;
    const streams: Readable[] = [body];
    // Ending the streams (rather than Upload.abort(), whose done() rejects before the
    // multipart upload is cleaned up) makes lib-storage run its own abort path to the end.
    const onAbort = (): void => {
      const reason = abortError(signal);
      for (const stream of streams) stream.destroy(reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw abortError(signal);
      const key = this.key(path);
      const { offset, etag } = await this.prepareWrite(path, key, options);
      const counted = { bytes: 0 };
      if (offset > 0) streams.unshift(await this.openPrefix(key, offset, etag));
      const feed = Readable.from(chain([...streams], counted), { objectMode: false });
      streams.push(feed);
      if (signal?.aborted) throw abortError(signal);
      await this.upload(key, feed, options.metadata);
      return { size: counted.bytes };
    } catch (err) {
      for (const stream of streams) stream.destroy();
      if (signal?.aborted) throw new StorageError('Unavailable', 'write aborted', { cause: signal.reason });
      throw classify(err, `write ${path}`);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async mkdir(path: StoragePath): Promise<void> {
    if (path === '' || (await this.lookup(path))) throw new StorageError('Exists', `already exists: ${path}`);
    await this.requireDirectory(parentPath(path));
    await this.putMarker(path);
  }

  async mkdirAll(path: StoragePath): Promise<void> {
    const segments = path === '' ? [] : path.split('/');
    for (let i = 1; i <= segments.length; i++) {
      const level = segments.slice(0, i).join('/');
      const info = await this.lookup(level);
      if (!info) await this.putMarker(level);
      else if (!info.isDirectory) throw new StorageError('NotADirectory', `not a directory: ${level}`);
    }
  }

  async rmdir(path: StoragePath): Promise<void> {
    if (path === '') throw new StorageError('Denied', 'cannot remove the root directory');
    const info = await this.stat(path);
    if (!info.isDirectory) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    const marker = this.dirPrefix(path);
    const page = await this.listPage(marker, undefined, undefined, undefined, 2);
    if ((page.Contents ?? []).some((o) => o.Key !== marker)) {
      throw new StorageError('NotEmpty', `directory not empty: ${path}`);
    }
    await this.call(`rmdir ${path}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: marker })));
  }

  async delete(path: StoragePath): Promise<void> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const key = this.key(path);
    // DeleteObject succeeds for missing keys, so look first to answer NotFound.
    if (!(await this.headFile(key))) throw await this.notFileError(path);
    await this.call(`delete ${path}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  async rename(from: StoragePath, to: StoragePath): Promise<void> {
    if (from === '') throw new StorageError('Denied', 'cannot rename the root directory');
    if (from === to || to.startsWith(`${from}/`)) {
      throw new StorageError('InvalidName', `cannot move ${from} onto or into itself`);
    }
    const source = await this.stat(from);
    await this.requireDirectory(parentPath(to));
    const target = await this.lookup(to);
    if (target && (target.isDirectory || source.isDirectory)) throw new StorageError('Exists', `already exists: ${to}`);
    if (source.isDirectory) {
      await this.renameDirectory(from, to);
    } else {
      const head = await this.headFile(this.key(from));
      if (!head) throw new StorageError('NotFound', `no such file: ${from}`);
      await this.copy(this.key(from), this.key(to), head.ContentLength ?? 0, head.ETag);
      await this.call(`rename ${from}`, () =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(from) })),
      );
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  /** The object key of a storage path. */
  private key(path: StoragePath): string {
    const key = this.prefix === '' ? path : path === '' ? this.prefix : `${this.prefix}/${path}`;
    return checkKey(key);
  }

  /** The key prefix of a directory's children (also its marker key); '' for an unprefixed root. */
  private dirPrefix(path: StoragePath): string {
    const key = this.key(path);
    return key === '' ? '' : checkKey(`${key}/`);
  }

  /** File or directory at path, or undefined: HEAD first, then a one-key listing. */
  private async lookup(path: StoragePath): Promise<FileInfo | undefined> {
    if (path === '') return this.stat(path);
    const head = await this.headFile(this.key(path));
    if (head) return { name: baseName(path), isDirectory: false, size: head.ContentLength ?? 0, mtime: head.LastModified ?? EPOCH };
    const prefix = this.dirPrefix(path);
    const page = await this.listPage(prefix, undefined, undefined, undefined, 1);
    const first = page.Contents?.[0];
    if (!first) return undefined;
    // The marker sorts before every other key under the prefix, so it comes first if present.
    const mtime = first.Key === prefix ? (first.LastModified ?? EPOCH) : EPOCH;
    return { name: baseName(path), isDirectory: true, size: 0, mtime };
  }

  private async headFile(key: string): Promise<HeadObjectCommandOutput | undefined> {
    try {
      return await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      const error = classify(err, `stat ${key}`);
      if (error.code === 'NotFound') return undefined;
      throw error;
    }
  }

  /** The error for a path that is not a file: IsADirectory if it is a directory, else NotFound. */
  private async notFileError(path: StoragePath, cause?: unknown): Promise<StorageError> {
    const info = await this.lookup(path);
    if (info?.isDirectory) return new StorageError('IsADirectory', `is a directory: ${path}`, { cause });
    return new StorageError('NotFound', `no such file: ${path}`, { cause });
  }

  /** Resolves when path is a directory; NotFound otherwise (also when it is a file). */
  private async requireDirectory(path: StoragePath): Promise<void> {
    if (path === '') return;
    const info = await this.lookup(path);
    if (!info?.isDirectory) throw new StorageError('NotFound', `no such directory: ${path}`);
  }

  private listPage(
    prefix: string,
    delimiter: string | undefined,
    token: string | undefined,
    signal?: AbortSignal,
    maxKeys = this.pageSize,
  ): Promise<ListObjectsV2CommandOutput> {
    const input = { Bucket: this.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token, MaxKeys: maxKeys };
    return this.call(`list ${prefix}`, () => this.client.send(new ListObjectsV2Command(input), { abortSignal: signal }));
  }

  /** Checks the target and parent of a write; returns the byte offset to keep and the ETag it belongs to. */
  private async prepareWrite(
    path: StoragePath,
    key: string,
    options: WriteOptions,
  ): Promise<{ offset: number; etag: string | undefined }> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    await this.requireDirectory(parentPath(path));
    const head = await this.headFile(key);
    if (!head && (await this.lookup(path))?.isDirectory) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const size = head?.ContentLength ?? 0;
    const offset = options.append ? size : (options.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new StorageError('InvalidRange', `offset ${offset} is beyond the end of ${path} (${size} bytes)`);
    }
    return { offset, etag: head?.ETag };
  }

  /**
   * The first n bytes of the object we looked at (IfMatch: a concurrent replacement
   * fails the write instead of splicing two objects). A later version may use UploadPartCopy.
   */
  private async openPrefix(key: string, n: number, etag: string | undefined): Promise<Readable> {
    const out = await this.call(`read ${key}`, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=0-${n - 1}`, IfMatch: etag })),
    );
    return out.Body as Readable;
  }

  /** Uploads a stream atomically; on failure no multipart upload is left behind. */
  private async upload(key: string, body: Readable, metadata: Record<string, string> | undefined): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body, Metadata: encodeMetadata(metadata) },
      partSize: this.config.partSize,
      queueSize: this.config.queueSize,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      // lib-storage aborts the upload itself, but its abort can fail or be skipped; do it again.
      if (upload.uploadId) await this.abortMultipart(key, upload.uploadId);
      throw err;
    }
  }

  private async abortMultipart(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchUpload') return;
      this.logger?.warn({ err, key, uploadId }, 'could not abort multipart upload; a bucket lifecycle rule must reap it');
    }
  }

  private async putMarker(path: StoragePath): Promise<void> {
    const marker = this.dirPrefix(path);
    await this.call(`mkdir ${path}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: marker, Body: new Uint8Array(0) })),
    );
  }

  /** Server-side copy of one object, part by part above the single-copy limit. */
  private async copy(from: string, to: string, size: number, etag: string | undefined): Promise<void> {
    if (size > this.multipartCopyThreshold) return this.multipartCopy(from, to, size, etag);
    await this.call(`copy ${from}`, () =>
      this.client.send(
        new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: copySource(this.bucket, from), CopySourceIfMatch: etag }),
      ),
    );
  }

  private async multipartCopy(from: string, to: string, size: number, etag: string | undefined): Promise<void> {
    const source = copySource(this.bucket, from);
    // A multipart upload does not inherit the source's headers; carry them over.
    const head = await this.headFile(from);
    if (!head) throw new StorageError('NotFound', `no such file: ${from}`);
    const created = await this.call(`copy ${from}`, () =>
      this.client.send(
        new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: to, Metadata: head.Metadata, ContentType: head.ContentType }),
      ),
    );
    const uploadId = created.UploadId ?? '';
    try {
      const partSize = Math.max(this.config.partSize, Math.ceil(size / MAX_PARTS));
      const ranges: Array<{ number: number; range: string }> = [];
      for (let start = 0, n = 1; start < size; start += partSize, n++) {
        ranges.push({ number: n, range: `bytes=${start}-${Math.min(start + partSize, size) - 1}` });
      }
      const parts = await mapLimit(ranges, PART_COPY_CONCURRENCY, async ({ number, range }) => {
        const out = await this.client.send(
          new UploadPartCopyCommand({
            Bucket: this.bucket,
            Key: to,
            UploadId: uploadId,
            PartNumber: number,
            CopySource: source,
            CopySourceRange: range,
            CopySourceIfMatch: etag,
          }),
        );
        return { PartNumber: number, ETag: out.CopyPartResult?.ETag };
      });
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: to, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (err) {
      await this.abortMultipart(to, uploadId);
      throw classify(err, `copy ${from}`);
    }
  }

  /**
   * Copies every key under the old prefix, then deletes the originals only once
   * all copies exist; on failure the copies made so far are removed again.
   */
  private async renameDirectory(from: StoragePath, to: StoragePath): Promise<void> {
    const src = this.dirPrefix(from);
    const dst = this.dirPrefix(to);
    // Keys are kept in memory so that objects written under `from` during the copy are not deleted unseen.
    const originals: string[] = [];
    const copies: string[] = [];
    try {
      let token: string | undefined;
      do {
        const page = await this.listPage(src, undefined, token, undefined, this.pageSize);
        const objects = (page.Contents ?? []).filter((o) => o.Key !== undefined);
        await mapLimit(objects, COPY_CONCURRENCY, async (o) => {
          const key = o.Key as string;
          const target = checkKey(dst + key.slice(src.length));
          await this.copy(key, target, o.Size ?? 0, o.ETag);
          copies.push(target);
          originals.push(key);
        });
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      await this.deleteKeys(copies).catch((cleanupErr: unknown) =>
        this.logger?.warn({ err: cleanupErr, from, to }, 'could not remove partial copies of a failed rename'),
      );
      throw classify(err, `rename ${from}`);
    }
    await this.deleteKeys(originals);
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH).map((Key) => ({ Key }));
      const out = await this.call('delete objects', () =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } })),
      );
      const failed = out.Errors?.[0];
      if (failed) throw classify(Object.assign(new Error(failed.Message ?? 'delete failed'), { name: failed.Code }), `delete ${failed.Key}`);
    }
  }

  /** Runs one S3 call, turning its failure into a StorageError. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw classify(err, what);
    }
  }
}

function clientConfig(config: S3StorageConfig): S3ClientConfig {
  return {
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: config.credentials,
    maxAttempts: 3,
    // requestTimeout bounds each request until its response headers; socketTimeout
    // bounds silence on the socket afterwards (a stalled body). Both are deadlines.
    requestHandler: {
      requestTimeout: config.requestTimeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: config.requestTimeoutMs,
      connectionTimeout: Math.min(config.requestTimeoutMs, 10_000),
    },
  };
}

const ERROR_CODES: Record<string, StorageErrorCode> = {
  NoSuchKey: 'NotFound',
  NotFound: 'NotFound',
  // A missing bucket is a configuration fault, not a missing path.
  NoSuchBucket: 'Unavailable',
  AccessDenied: 'Denied',
  Forbidden: 'Denied',
  AllAccessDisabled: 'Denied',
  InvalidAccessKeyId: 'Denied',
  SignatureDoesNotMatch: 'Denied',
  KeyTooLongError: 'InvalidName',
  InvalidObjectName: 'InvalidName',
  XMinioInvalidObjectName: 'InvalidName',
  XMinioParentIsObject: 'NotADirectory',
  InvalidRange: 'InvalidRange',
  EntityTooLarge: 'QuotaExceeded',
  XMinioStorageFull: 'QuotaExceeded',
  XMinioAdminBucketQuotaExceeded: 'QuotaExceeded',
};

const STATUS_CODES: Record<number, StorageErrorCode> = { 403: 'Denied', 404: 'NotFound', 416: 'InvalidRange' };

/**
 * The only place S3 error names and HTTP statuses are read. Throttling, 5xx,
 * timeouts, aborts and network errors all fall through to Unavailable: the
 * client may retry later, and nothing about its path is wrong.
 */
function classify(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as { name?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.Code ?? e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  let code = ERROR_CODES[name] ?? (status === undefined ? undefined : STATUS_CODES[status]) ?? 'Unavailable';
  // lib-storage's own limit (partSize × 10000) surfaces as a plain Error.
  if (/^Exceeded \d+ parts/.test(e.message ?? '')) code = 'QuotaExceeded';
  return new StorageError(code, `${what}: ${name}${e.message ? `: ${e.message}` : ''}`, { cause: err });
}

function checkKey(key: string): string {
  if (Buffer.byteLength(key) > MAX_PATH_BYTES) throw new StorageError('InvalidName', 'key longer than 1024 bytes');
  return key;
}

function pageHasKeys(page: ListObjectsV2CommandOutput): boolean {
  return (page.KeyCount ?? 0) > 0 || (page.Contents?.length ?? 0) > 0 || (page.CommonPrefixes?.length ?? 0) > 0;
}

/** One listing page as directory entries; the directory's own marker and unusable names are left out. */
function entriesOf(page: ListObjectsV2CommandOutput, prefix: string): FileInfo[] {
  const entries: FileInfo[] = [];
  for (const p of page.CommonPrefixes ?? []) {
    const name = (p.Prefix ?? '').slice(prefix.length, -1);
    if (usableName(name)) entries.push({ name, isDirectory: true, size: 0, mtime: EPOCH });
  }
  for (const o of page.Contents ?? []) {
    const name = (o.Key ?? '').slice(prefix.length);
    if (usableName(name)) entries.push({ name, isDirectory: false, size: o.Size ?? 0, mtime: o.LastModified ?? EPOCH });
  }
  return entries;
}

/** Keys written by other tools can hold segments no FTP path can address ('', '.', '..'). */
function usableName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..';
}

/** CopySource is `bucket/key`, URL-encoded per segment so '+', '%', '?', '#' and UTF-8 survive. */
function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/** S3 user metadata travels in HTTP headers, so values are made ASCII. */
function encodeMetadata(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!metadata) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    const key = k.toLowerCase().replace(/[^a-z0-9-]/g, '-');
    if (key !== '') out[key] = encodeURIComponent(v);
  }
  return out;
}

function abortError(signal: AbortSignal | undefined): Error {
  return Object.assign(new Error('aborted', { cause: signal?.reason }), { name: 'AbortError' });
}

/** Yields the chunks of each stream in turn, counting bytes. */
async function* chain(sources: Readable[], counted: { bytes: number }): AsyncGenerator<Buffer> {
  for (const source of sources) {
    for await (const chunk of source) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      counted.bytes += buf.length;
      yield buf;
    }
  }
}

/** Maps items with at most `limit` calls in flight; results keep the input order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const workers = Array.from({ length: Math.min(limit, items.length) }, worker);
  const settled = await Promise.allSettled(workers);
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}
