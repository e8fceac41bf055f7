import { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
  type _Object,
  type HeadObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Logger } from 'pino';
import type { S3StorageConfig } from '../config/index.js';
import { MAX_PATH_BYTES, RESERVED_PREFIX } from '../paths.js';
import { createDigest, digestStream, type Digest } from './digest.js';
import { MultipartAborts } from './s3-aborts.js';
import { mapLimit, MIN_PART_BYTES, MultipartWriter } from './s3-multipart.js';
import {
  baseName,
  parentPath,
  StorageError,
  type FileInfo,
  type HashAlgorithm,
  type HashResult,
  type OpenedRead,
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
/**
 * Above this, copies use parallel UploadPartCopy calls: one CopyObject of a
 * large object runs as a single server-side stream and is much slower.
 */
export const DEFAULT_MULTIPART_COPY_THRESHOLD = 256 * 1024 * 1024;
/** Parallel server-side object copies during a directory rename. */
export const DEFAULT_RENAME_CONCURRENCY = 16;
/** DeleteObjects takes at most 1000 keys per request. */
const DELETE_BATCH = 1000;
/** A directory rename logs its progress this often (objects, or ms, whichever comes first). */
const PROGRESS_EVERY_OBJECTS = 1000;
const PROGRESS_EVERY_MS = 5000;
/**
 * The SHA-256 of the whole object: user metadata (x-amz-meta-s3ftp-sha256) on
 * an object stored by one PutObject, an object tag of the same name on a
 * multipart upload (its metadata is fixed before the bytes are seen).
 */
export const SHA256_METADATA = 's3ftp-sha256';
/**
 * Key inside a directory being renamed onto, holding the source prefix. Its
 * presence marks an unfinished rename that may be run again onto the same target.
 */
const RENAME_JOURNAL = `${RESERVED_PREFIX}rename`;
const EPOCH = new Date(0);

/** Optional S3Storage settings; the defaults suit production. */
export interface S3StorageOptions {
  logger?: Logger;
  /** MaxKeys per ListObjectsV2 page; tests lower it to exercise paging. */
  pageSize?: number;
  /** Objects larger than this are copied part by part; overrides the config (tests lower it). */
  multipartCopyThreshold?: number;
  /** Awaited before each listing page is fetched (1, 2, …): instrumentation for tests. */
  onListPage?: (page: number) => void | Promise<void>;
  /** Tests only: make the object copy after `failCopyAfter` started copies fail, once. */
  faultInjection?: { failCopyAfter?: number };
  /** How often to retry aborting multipart uploads the storage could not abort when they failed. */
  abortRetryMs?: number;
  /** Called after each S3 request (retries included) with its operation, e.g. 'HeadObject': for metrics. */
  onRequest?: (operation: string, seconds: number, ok: boolean) => void;
}

/** One write in progress: what every write path needs to know and to count. */
interface WriteJob {
  key: string;
  /** Bytes of the existing object kept in front of the body. */
  offset: number;
  /** ETag of the existing object the offset refers to. */
  etag: string | undefined;
  body: Readable;
  /** Every stream the write owns; an abort destroys them all. */
  streams: Readable[];
  metadata: Record<string, string> | undefined;
  publishOnAbort: boolean;
  tally: Tally;
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
  private readonly renameConcurrency: number;
  private readonly onListPage: S3StorageOptions['onListPage'];
  private readonly faults: { failCopyAfter?: number };
  private copiesStarted = 0;
  private readonly aborts: MultipartAborts;
  /** S3 requests sent, by command name (e.g. 'UploadPartCopyCommand'), retries not counted: for metrics and tests. */
  readonly requestCounts = new Map<string, number>();

  constructor(
    private readonly config: S3StorageConfig,
    options: S3StorageOptions = {},
  ) {
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.logger = options.logger;
    this.pageSize = options.pageSize;
    this.multipartCopyThreshold = Math.min(
      options.multipartCopyThreshold ?? config.multipartCopyThreshold ?? DEFAULT_MULTIPART_COPY_THRESHOLD,
      MAX_SINGLE_COPY_BYTES,
    );
    this.renameConcurrency = config.renameConcurrency ?? DEFAULT_RENAME_CONCURRENCY;
    this.onListPage = options.onListPage;
    this.faults = { ...options.faultInjection };
    this.client = new S3Client(clientConfig(config));
    this.aborts = new MultipartAborts(this.client, this.bucket, this.logger, options.abortRetryMs);
    this.client.middlewareStack.add(
      (next, context) => (args) => {
        const name = context.commandName ?? 'unknown';
        this.requestCounts.set(name, (this.requestCounts.get(name) ?? 0) + 1);
        return next(args);
      },
      { step: 'initialize', name: 's3ftpRequestCounter' },
    );
    const onRequest = options.onRequest;
    if (onRequest) {
      this.client.middlewareStack.add(
        (next, context) => async (args) => {
          const operation = (context.commandName ?? 'Unknown').replace(/Command$/, '');
          const started = performance.now();
          let ok = false;
          try {
            const result = await next(args);
            ok = true;
            return result;
          } finally {
            onRequest(operation, (performance.now() - started) / 1000, ok);
          }
        },
        { step: 'initialize', name: 's3ftpRequestTimer' },
      );
    }
  }

  async stat(path: StoragePath): Promise<FileInfo> {
    if (path === '') return { name: '', isDirectory: true, size: 0, mtime: EPOCH };
    const info = await this.lookup(path);
    if (!info) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return info;
  }

  async *list(path: StoragePath, signal?: AbortSignal): AsyncIterable<FileInfo[]> {
    const prefix = this.dirPrefix(path);
    let number = 0;
    const fetch = async (token: string | undefined): Promise<ListObjectsV2CommandOutput> => {
      await this.onListPage?.(++number);
      return this.listPage(prefix, '/', token, signal);
    };
    let page = await fetch(undefined);
    if (path !== '' && !pageHasKeys(page)) {
      // An empty first page means no directory; tell a file apart for the client.
      if (await this.headFile(this.key(path))) {
        throw new StorageError('NotADirectory', `not a directory: ${path}`);
      }
      throw new StorageError('NotFound', `no such directory: ${path}`);
    }
    for (;;) {
      const token = page.IsTruncated ? page.NextContinuationToken : undefined;
      // From the second page on, the next one is fetched while this one is sent
      // (at most two pages held); the first page still goes out before any other is asked for.
      const next = token && number > 1 ? fetch(token) : undefined;
      next?.catch(() => undefined); // awaited below, unless the consumer stops early
      yield entriesOf(page, prefix);
      if (!token) return;
      page = await (next ?? fetch(token));
    }
  }

  async read(path: StoragePath, options: ReadOptions = {}): Promise<OpenedRead> {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StorageError('InvalidRange', `bad offset ${start}`);
    const key = this.key(path);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: start > 0 ? `bytes=${start}-` : undefined }),
        { abortSignal: options.signal },
      );
      return { stream: out.Body as Readable, size: out.ContentLength ?? 0 };
    } catch (err) {
      const error = classify(err, `read ${path}`);
      if (error.code === 'NotFound') throw await this.notFileError(path, error);
      if (error.code !== 'InvalidRange') throw error;
      // S3 answers 416 for start == size too; that one is a valid, empty read.
      const head = await this.headFile(key);
      if (head && (head.ContentLength ?? 0) === start) return { stream: Readable.from([]), size: 0 };
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
      const job: WriteJob = {
        key,
        offset,
        etag,
        body,
        streams,
        metadata: encodeMetadata(options.metadata),
        publishOnAbort: options.onAbort === 'publish',
        tally: new Tally(),
      };
      if (signal?.aborted) throw abortError(signal);
      // lib-storage can neither start with copied parts nor publish a partial upload.
      if (offset === 0 && !job.publishOnAbort) await this.writeWhole(job);
      else await this.writeSpliced(job);
      return { size: job.tally.bytes };
    } catch (err) {
      for (const stream of streams) stream.destroy();
      if (signal?.aborted) throw new StorageError('Unavailable', 'write aborted', { cause: signal.reason });
      throw classify(err, `write ${path}`);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async hash(path: StoragePath, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<HashResult> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const key = this.key(path);
    const head = await this.headFile(key);
    if (!head) throw await this.notFileError(path);
    const stored = algorithm === 'SHA-256' ? (head.Metadata?.[SHA256_METADATA] ?? (await this.taggedHash(key, head.ETag))) : undefined;
    if (stored !== undefined && /^[0-9a-f]{64}$/.test(stored)) {
      return { algorithm, hash: stored, size: head.ContentLength ?? 0, stored: true };
    }
    // IfMatch: the hash is of the version the HEAD saw, never of two versions mixed.
    const out = await this.call(`hash ${path}`, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, IfMatch: head.ETag }), { abortSignal: signal }),
    );
    try {
      const { hash, size } = await digestStream(out.Body as Readable, algorithm, signal);
      return { algorithm, hash, size, stored: false };
    } catch (err) {
      (out.Body as Readable).destroy();
      throw classify(err, `hash ${path}`);
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
    if (target && (target.isDirectory || source.isDirectory)) {
      // The one existing target allowed: what an interrupted rename of this same directory left.
      const resuming = source.isDirectory && target.isDirectory && (await this.unfinishedRename(from, to));
      if (!resuming) throw new StorageError('Exists', `already exists: ${to}`);
    }
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
    this.aborts.close();
    this.client.destroy();
  }

  async ping(): Promise<void> {
    // HeadBucket needs only s3:ListBucket, which the server needs anyway.
    await this.call(`bucket ${this.bucket}`, () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
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

  /**
   * The SHA-256 tag of the object whose ETag is `etag`, or undefined (no tag,
   * tags unreadable, or the object changed meanwhile: the caller then hashes by reading).
   */
  private async taggedHash(key: string, etag: string | undefined): Promise<string | undefined> {
    try {
      const out = await this.client.send(new GetObjectTaggingCommand({ Bucket: this.bucket, Key: key }));
      const hash = out.TagSet?.find((t) => t.Key === SHA256_METADATA)?.Value;
      if (hash === undefined) return undefined;
      // The tags were read between two HEADs of the same object, so they are its tags.
      return (await this.headFile(key))?.ETag === etag ? hash : undefined;
    } catch {
      return undefined;
    }
  }

  /** The error for a path that is not a file: IsADirectory if it is a directory, else NotFound. */
  private async notFileError(path: StoragePath, cause?: unknown): Promise<StorageError> {
    const info = await this.lookup(path);
    if (info?.isDirectory) return new StorageError('IsADirectory', `is a directory: ${path}`, { cause });
    return new StorageError('NotFound', `no such file: ${path}`, { cause });
  }

  /**
   * Resolves when path is a directory; NotFound otherwise (also when it is a
   * file). One round trip: a directory is a prefix with a key under it (its marker, or any object).
   */
  private async requireDirectory(path: StoragePath): Promise<void> {
    if (path === '') return;
    const page = await this.listPage(this.dirPrefix(path), undefined, undefined, undefined, 1);
    if ((page.Contents?.length ?? 0) === 0) throw new StorageError('NotFound', `no such directory: ${path}`);
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
    // One round trip, not three: small files are latency-bound.
    // A plain STOR needs no HeadObject: only APPE and REST keep existing bytes.
    const keeps = options.append === true || (options.offset ?? 0) > 0;
    const [head, hasChildren] = await Promise.all([
      keeps ? this.headFile(key) : undefined,
      this.listPage(this.dirPrefix(path), undefined, undefined, undefined, 1).then((page) => (page.Contents?.length ?? 0) > 0),
      this.requireDirectory(parentPath(path)),
    ]);
    if (!head && hasChildren) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const size = head?.ContentLength ?? 0;
    const offset = options.append ? size : (options.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new StorageError('InvalidRange', `offset ${offset} is beyond the end of ${path} (${size} bytes)`);
    }
    return { offset, etag: head?.ETag };
  }

  /** The first n bytes of the object we looked at (IfMatch: a concurrent replacement fails the write instead of splicing two objects). */
  private async openPrefix(key: string, n: number, etag: string | undefined): Promise<Readable> {
    const out = await this.call(`read ${key}`, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=0-${n - 1}`, IfMatch: etag })),
    );
    return out.Body as Readable;
  }

  /**
   * A plain STOR. A body shorter than one part becomes one PutObject that
   * carries its SHA-256; a longer one goes through lib-storage, and its hash is
   * recorded afterwards (multipart metadata is fixed before the bytes are seen).
   */
  private async writeWhole(job: WriteJob): Promise<void> {
    const chunks = job.tally.through(job.body)[Symbol.asyncIterator]();
    const head = await readUpTo(chunks, this.config.partSize);
    if (head.done) {
      const Body = Buffer.concat(head.chunks);
      const Metadata = withHash(job.metadata, job.tally.hex());
      await this.call(`write ${job.key}`, () =>
        this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: job.key, Body, Metadata })),
      );
      return;
    }
    const feed = Readable.from(resume(head.chunks, chunks), { objectMode: false });
    job.streams.push(feed);
    const etag = await this.upload(job.key, feed, job.metadata);
    await this.storeHash(job, etag);
  }

  /**
   * APPE, REST + STOR, and any write that must publish what it received when
   * cut off: the kept prefix, then the body, through our own multipart writer.
   */
  private async writeSpliced(job: WriteJob): Promise<void> {
    const writer = new MultipartWriter({
      client: this.client,
      bucket: this.bucket,
      key: job.key,
      partSize: this.config.partSize,
      queueSize: this.config.queueSize,
      create: { Metadata: job.metadata },
      aborts: this.aborts,
    });
    let received = 0;
    try {
      await this.keepPrefix(job, writer);
      for await (const chunk of job.tally.through(job.body)) {
        received += chunk.length;
        await writer.push(chunk);
      }
      const hashed = job.tally.complete;
      const done = await writer.finish(hashed ? withHash(job.metadata, job.tally.hex()) : job.metadata);
      if (done.multipart && hashed) await this.storeHash(job, done.etag);
    } catch (err) {
      if (job.publishOnAbort && received > 0) await this.publishPartial(job.key, writer);
      else await writer.abort();
      throw err;
    }
  }

  /**
   * Puts the existing object's first `offset` bytes in front of the body: as
   * server-side part copies when they fill at least one part, else by reading
   * them (S3 copies no part under 5 MiB unless it is the last).
   */
  private async keepPrefix(job: WriteJob, writer: MultipartWriter): Promise<void> {
    if (job.offset === 0) return;
    if (job.offset >= MIN_PART_BYTES) {
      await writer.copyRange(copySource(this.bucket, job.key), job.offset, job.etag);
      job.tally.skip(job.offset);
      return;
    }
    const prefix = await this.openPrefix(job.key, job.offset, job.etag);
    job.streams.push(prefix);
    for await (const chunk of job.tally.through(prefix)) await writer.push(chunk);
  }

  /** The keepPartialUploads policy: what was received becomes the object; if that fails, nothing does. */
  private async publishPartial(key: string, writer: MultipartWriter): Promise<void> {
    try {
      const bytes = await writer.publishReceived();
      this.logger?.info({ event: 'partial-upload-published', key, bytes });
    } catch (err) {
      this.logger?.warn({ err, key }, 'could not publish a partial upload; the previous object stays');
      await writer.abort();
    }
  }

  /**
   * Records the SHA-256 of a completed multipart upload as an object tag: no
   * byte is copied, no new version or S3 event is made. PutObjectTagging has no
   * If-Match, so if another writer replaced the object meanwhile the tag is taken
   * back. Failing here loses only the stored hash: HASH then reads the object.
   */
  private async storeHash(job: WriteJob, etag: string | undefined): Promise<void> {
    const target = { Bucket: this.bucket, Key: job.key };
    try {
      await this.client.send(new PutObjectTaggingCommand({ ...target, Tagging: { TagSet: [{ Key: SHA256_METADATA, Value: job.tally.hex() }] } }));
      const head = await this.headFile(job.key);
      if (head && head.ETag !== etag) await this.client.send(new PutObjectTaggingCommand({ ...target, Tagging: { TagSet: [] } }));
    } catch (err) {
      this.logger?.warn({ err, key: job.key }, 'could not record the SHA-256 of an upload');
    }
  }

  /** Uploads a stream atomically; on failure no multipart upload is left behind. Returns the ETag. */
  private async upload(key: string, body: Readable, metadata: Record<string, string> | undefined): Promise<string | undefined> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body, Metadata: metadata },
      partSize: this.config.partSize,
      queueSize: this.config.queueSize,
      leavePartsOnError: false,
    });
    try {
      const out = await upload.done();
      return out.ETag;
    } catch (err) {
      // lib-storage aborts the upload itself, but its abort can fail or be skipped; do it again.
      if (upload.uploadId) await this.aborts.abort(key, upload.uploadId);
      throw err;
    }
  }

  private async putMarker(path: StoragePath): Promise<void> {
    const marker = this.dirPrefix(path);
    await this.call(`mkdir ${path}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: marker, Body: new Uint8Array(0) })),
    );
  }

  /** Server-side copy of one object (metadata and tags included), part by part above the threshold. */
  private async copy(from: string, to: string, size: number, etag: string | undefined): Promise<void> {
    if (size > this.multipartCopyThreshold) return this.multipartCopy(from, to, size, etag);
    await this.call(`copy ${from}`, () =>
      this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: copySource(this.bucket, from), CopySourceIfMatch: etag })),
    );
  }

  private async multipartCopy(from: string, to: string, size: number, etag: string | undefined): Promise<void> {
    // A multipart upload does not inherit the source's headers or tags; carry them over.
    const head = await this.headFile(from);
    if (!head) throw new StorageError('NotFound', `no such file: ${from}`);
    // Tags that cannot be read (no permission, a store without tagging) are not carried; the copy goes on.
    const tags = await this.client.send(new GetObjectTaggingCommand({ Bucket: this.bucket, Key: from })).catch(() => undefined);
    const writer = new MultipartWriter({
      client: this.client,
      bucket: this.bucket,
      key: to,
      partSize: this.config.partSize,
      queueSize: this.config.queueSize,
      create: {
        Metadata: head.Metadata,
        Tagging: (tags?.TagSet ?? []).map((t) => `${encodeURIComponent(t.Key ?? '')}=${encodeURIComponent(t.Value ?? '')}`).join('&') || undefined,
        ContentType: head.ContentType,
        ContentEncoding: head.ContentEncoding,
        ContentDisposition: head.ContentDisposition,
        ContentLanguage: head.ContentLanguage,
        CacheControl: head.CacheControl,
      },
      aborts: this.aborts,
    });
    try {
      await writer.copyRange(copySource(this.bucket, from), size, etag);
      await writer.finish();
    } catch (err) {
      await writer.abort();
      throw classify(err, `copy ${from}`);
    }
  }

  /**
   * Copies every key under the old prefix with bounded parallelism, then
   * deletes the originals only once every copy exists. A failure leaves the
   * copies made so far and a journal in the target: every object then exists
   * under its old name, some also under the new one, and running the same
   * rename again finishes the job.
   */
  private async renameDirectory(from: StoragePath, to: StoragePath): Promise<void> {
    const src = this.dirPrefix(from);
    const dst = this.dirPrefix(to);
    const journal = checkKey(dst + RENAME_JOURNAL);
    await this.call(`rename ${from}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: journal, Body: src })),
    );
    // Keys are kept in memory (about 100 bytes each) so objects written under `from` during the copy are not deleted unseen.
    const originals: string[] = [];
    const progress = new RenameProgress(this.logger, from, to);
    try {
      for await (const objects of this.objectPages(src)) {
        await mapLimit(objects, this.renameConcurrency, async (o) => {
          const key = o.Key as string;
          // A journal under the source belongs to an earlier rename into `from`; it moves nowhere.
          if (key !== src + RENAME_JOURNAL) await this.copyForRename(key, checkKey(dst + key.slice(src.length)), o);
          originals.push(key);
          progress.copied(o.Size ?? 0);
        });
      }
    } catch (err) {
      const error = classify(err, `rename ${from}`);
      this.logger?.warn({ event: 'rename-failed', from, to, copied: progress.objects, err: error }, 'directory rename failed; run it again to finish');
      throw error;
    }
    await this.deleteKeys(originals);
    await this.deleteKeys([journal]);
    progress.done();
  }

  private async copyForRename(from: string, to: string, object: _Object): Promise<void> {
    const { failCopyAfter } = this.faults;
    if (failCopyAfter !== undefined && this.copiesStarted++ >= failCopyAfter) {
      this.faults.failCopyAfter = undefined;
      throw new StorageError('Unavailable', 'injected copy failure');
    }
    await this.copy(from, to, object.Size ?? 0, object.ETag);
  }

  /** True when `to` holds the journal of an unfinished rename from `from`. */
  private async unfinishedRename(from: StoragePath, to: StoragePath): Promise<boolean> {
    const journal = checkKey(this.dirPrefix(to) + RENAME_JOURNAL);
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: journal }));
      return (await out.Body?.transformToString()) === this.dirPrefix(from);
    } catch (err) {
      const error = classify(err, `rename ${from}`);
      if (error.code === 'NotFound') return false;
      throw error;
    }
  }

  /** Every object under a prefix (no delimiter), page by page. */
  private async *objectPages(prefix: string): AsyncGenerator<_Object[]> {
    let token: string | undefined;
    do {
      const page = await this.listPage(prefix, undefined, token);
      yield (page.Contents ?? []).filter((o) => o.Key !== undefined);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
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

/**
 * Keys written by other tools can hold segments no FTP path can address ('', '.', '..');
 * names in the reserved namespace are the server's own (rename journals).
 */
function usableName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.startsWith(RESERVED_PREFIX);
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

/** Counts the bytes of a write and hashes those that pass through the server. */
class Tally {
  bytes = 0;
  /** False once bytes were copied server-side: the digest then misses them. */
  complete = true;
  readonly #digest: Digest = createDigest('SHA-256');

  async *through(source: AsyncIterable<unknown>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      this.bytes += buf.length;
      this.#digest.update(buf);
      yield buf;
    }
  }

  skip(bytes: number): void {
    this.bytes += bytes;
    this.complete = false;
  }

  hex(): string {
    return this.#digest.hex();
  }
}

/** Pulls chunks until `limit` bytes or the end; `done` tells which. */
async function readUpTo(chunks: AsyncIterator<Buffer>, limit: number): Promise<{ chunks: Buffer[]; done: boolean }> {
  const taken: Buffer[] = [];
  let bytes = 0;
  while (bytes < limit) {
    const next = await chunks.next();
    if (next.done) return { chunks: taken, done: true };
    taken.push(next.value);
    bytes += next.value.length;
  }
  return { chunks: taken, done: false };
}

/** The chunks already taken, then the rest of the iterator. */
async function* resume(taken: Buffer[], rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  yield* taken;
  for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
}

function withHash(metadata: Record<string, string> | undefined, sha256: string): Record<string, string> {
  return { ...metadata, [SHA256_METADATA]: sha256 };
}

/** Logs a directory rename's progress every so many objects or seconds, and its end. */
class RenameProgress {
  objects = 0;
  #bytes = 0;
  #lastLog = performance.now();
  readonly #started = performance.now();

  constructor(
    private readonly logger: Logger | undefined,
    private readonly from: StoragePath,
    private readonly to: StoragePath,
  ) {}

  copied(bytes: number): void {
    this.objects++;
    this.#bytes += bytes;
    const now = performance.now();
    if (this.objects % PROGRESS_EVERY_OBJECTS === 0 || now - this.#lastLog >= PROGRESS_EVERY_MS) {
      this.#lastLog = now;
      this.logger?.info({ event: 'rename-progress', from: this.from, to: this.to, objects: this.objects, bytes: this.#bytes });
    }
  }

  done(): void {
    const ms = Math.round(performance.now() - this.#started);
    this.logger?.info({ event: 'rename-done', from: this.from, to: this.to, objects: this.objects, bytes: this.#bytes, ms });
  }
}
