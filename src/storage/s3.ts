import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
  type _Object,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { S3StorageConfig } from '../config/index.js';
import { MAX_PATH_BYTES, RESERVED_PREFIX } from '../paths.js';
import { Slots } from '../slots.js';
import { createDigest, digestStream, type Digest } from './digest.js';
import { KnownDirectories } from './known-directories.js';
import { MultipartAborts } from './s3-aborts.js';
import { mapLimit, MIN_PART_BYTES, MultipartWriter, type MultipartWriterOptions } from './s3-multipart.js';
import {
  baseName,
  parentPath,
  StorageError,
  type FileInfo,
  type HashAlgorithm,
  type HashResult,
  type ListOptions,
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
/** A random id each upload stores with its object: how the driver knows its own write after a lost answer. */
const WRITE_ID_METADATA = 's3ftp-write-id';
/**
 * Key inside a directory being renamed onto, holding the source prefix. Its
 * presence marks an unfinished rename that may be run again onto the same target.
 */
const RENAME_JOURNAL = `${RESERVED_PREFIX}rename`;
/** How long a stopped rename may take to record its copies: S3 may be what stopped it. */
const JOURNAL_AFTER_FAILURE_MS = 5000;
const EPOCH = new Date(0);
/** How long a directory seen to exist is trusted without asking S3 again (see KnownDirectories). */
const KNOWN_DIRECTORY_MS = 10_000;
/** HEADs of directory markers in flight for one listing page. */
const DIRECTORY_TIME_CONCURRENCY = 16;
/**
 * The marker HEADs for directory dates running at once in the whole
 * process: however many sessions list, dates leave half of the short
 * requests' sockets (DEFAULT_METADATA_SOCKETS) to everything else.
 */
const directoryTimeSlots = new Slots(32);
/**
 * How long one marker HEAD may take, from when it is sent (not while it
 * waits its turn). S3 answers one in milliseconds; the first that takes
 * longer ends the page's dates (the rest show the epoch), so a store that
 * stalls holds a listing this long, not a request timeout per date.
 */
const DIRECTORY_TIME_TIMEOUT_MS = 2000;

/** Optional S3Storage settings; the defaults suit production. */
export interface S3StorageOptions {
  logger?: Logger;
  /** MaxKeys per ListObjectsV2 page; tests lower it to exercise paging. */
  pageSize?: number;
  /** Objects larger than this are copied part by part; overrides the config (tests lower it). */
  multipartCopyThreshold?: number;
  /** How often to retry aborting multipart uploads the storage could not abort when they failed. */
  abortRetryMs?: number;
  /** Called after each S3 request (retries included) with its operation, e.g. 'HeadObject': for metrics. */
  onRequest?: (operation: string, seconds: number, ok: boolean) => void;
  /**
   * Sockets of the client that streams object bodies (GET bodies, part
   * uploads). Each running RETR or STOR holds one for its whole length, so
   * this should be at least the connection limit. Default 1024.
   */
  transferSockets?: number;
  /** Sockets of the client for metadata requests (HEAD, List, Delete, Complete, …). Default 64. Server-side copies have 32 of their own. */
  metadataSockets?: number;
}

export const DEFAULT_TRANSFER_SOCKETS = 1024;
export const DEFAULT_METADATA_SOCKETS = 64;
/** Server-side copies in flight at once, for all sessions (see S3Storage.copies). */
const COPY_SOCKETS = 32;

/** One write in progress: what every write path needs to know and to count. */
interface WriteJob {
  key: string;
  /** Bytes of the existing object kept in front of the body. */
  offset: number;
  /** ETag of the existing object the offset refers to. */
  etag: string | undefined;
  /** What an APPE or REST + STOR builds on, to publish over only that (MultipartWriterOptions.base). */
  base: MultipartWriterOptions['base'];
  body: Readable;
  /** Every stream the write owns; an abort destroys them all. */
  streams: Readable[];
  metadata: Record<string, string>;
  publishOnAbort: boolean;
  onPartial?: (size: number) => void;
  tally: Tally;
  /** Once aborted, nothing is published (unless publishOnAbort). */
  signal: AbortSignal | undefined;
  /** Awaited right before PutObject or CompleteMultipartUpload (WriteOptions.beforePublish). */
  beforePublish: (() => Promise<void>) | undefined;
}

/** A Storage on an S3 bucket under a key prefix; directories are key prefixes kept alive by `dir/` markers. */
export class S3Storage implements Storage {
    /** No S3 API sets LastModified; MFMT and `MDTM <time> <path>` are refused (550) rather than faked. */
  readonly capabilities: StorageCapabilities = { resumeUpload: true, setModificationTime: false };
  /** Short requests: their own socket pool, so transfers holding sockets never starve LIST, SIZE or readiness. */
  private readonly client: S3Client;
  /** Requests that stream a body for as long as a transfer lasts (GetObject for reads, UploadPart). */
  private readonly transfer: S3Client;
  /**
   * Sends server-side copies (CopyObject, UploadPartCopy): long requests, on a
   * pool of their own, so a flood of copies (resumes, directory renames) never
   * holds the sockets the short requests of other sessions need. At most
   * COPY_SOCKETS run at once; the rest wait in line here, where waiting does
   * not count against their timeouts as it would in the agent's queue.
   */
  private readonly copies: S3Client;
  /** Multipart uploads this process has open: a sweep leaves them alone, whatever their age. */
  private readonly openUploads = new Set<string>();
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly pageSize: number | undefined;
  private readonly multipartCopyThreshold: number;
  private readonly renameConcurrency: number;
  private readonly aborts: MultipartAborts;
  /** Directories seen lately, shared by every storage on the bucket: a STOR into one asks S3 nothing before its 150. */
  private readonly directories: KnownDirectories;

  constructor(
    private readonly config: S3StorageConfig,
    options: S3StorageOptions = {},
  ) {
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.directories = KnownDirectories.forBucket(`${config.endpoint ?? ''} ${config.region}`, config.bucket, KNOWN_DIRECTORY_MS);
    this.logger = options.logger;
    this.pageSize = options.pageSize;
    this.multipartCopyThreshold = Math.min(
      options.multipartCopyThreshold ?? config.multipartCopyThreshold ?? DEFAULT_MULTIPART_COPY_THRESHOLD,
      MAX_SINGLE_COPY_BYTES,
    );
    this.renameConcurrency = config.renameConcurrency ?? DEFAULT_RENAME_CONCURRENCY;
    this.client = new S3Client(clientConfig(config, options.metadataSockets ?? DEFAULT_METADATA_SOCKETS));
    this.transfer = new S3Client(clientConfig(config, options.transferSockets ?? DEFAULT_TRANSFER_SOCKETS));
    this.copies = new S3Client(clientConfig(config, COPY_SOCKETS));
    const copySlots = new Slots(COPY_SOCKETS);
    this.copies.middlewareStack.add((next) => (args) => copySlots.run(() => next(args)), { step: 'initialize', name: 's3ftpCopySlots' });
    this.aborts = new MultipartAborts(this.client, this.bucket, this.logger, options.abortRetryMs);
    for (const client of [this.client, this.transfer, this.copies]) {
      // It copied every response (a listing page's 1,000 entries) through the SDK's
      // sensitive-data filter to hand it to the default no-op logger: CPU and garbage for nothing.
      client.middlewareStack.remove('loggerMiddleware');
      this.instrument(client, options.onRequest);
      this.reportRefusals(client);
    }
  }

  /**
   * S3 refusing the server itself (credentials, signature, clock skew, an
   * expired token) is logged at error level with S3's error code, whatever
   * command or transfer ran into it: clients only see 451.
   */
  private reportRefusals(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        try {
          return await next(args);
        } catch (err) {
          const name = s3ErrorName(err);
          if (ERROR_CODES[name] === 'BackendRefused') {
            this.logger?.error(
              { event: 's3-refused-credentials', s3Code: name, operation: context.commandName, bucket: this.bucket, message: (err as Error).message },
              'S3 refused the server\'s credentials, signature or clock: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and the clock',
            );
          }
          throw err;
        }
      },
      { step: 'initialize', name: 's3ftpRefusalReporter' },
    );
  }

  /** Times every request a client sends, for onRequest (metrics). */
  private instrument(client: S3Client, onRequest: S3StorageOptions['onRequest']): void {
    if (onRequest) {
      client.middlewareStack.add(
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

  async stat(path: StoragePath, signal?: AbortSignal): Promise<FileInfo> {
    if (path === '') return { name: '', isDirectory: true, size: 0, mtime: EPOCH };
    const info = await this.lookup(path, signal);
    if (!info) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return info;
  }

  /**
   * With a delimiter, S3 folds a subdirectory's `name/` marker into its
   * CommonPrefix, which has no date. So each subdirectory on a page costs one
   * HEAD of its marker for its LastModified (see addDirectoryTimes); one
   * without a marker keeps the epoch. `directoryTimes: false` (NLST, which
   * shows no dates) skips them.
   */
  async *list(path: StoragePath, signal?: AbortSignal, options: ListOptions = {}): AsyncIterable<FileInfo[]> {
    const prefix = this.dirPrefix(path);
    let first = true;
    const fetch = (token: string | undefined): Promise<ListObjectsV2CommandOutput> => this.listPage(prefix, '/', token, signal);
    let page = await fetch(undefined);
    if (path !== '' && !pageHasKeys(page)) {
      // An empty first page means no directory; tell a file apart for the client.
      if (await this.headFile(this.key(path), signal)) {
        throw new StorageError('NotADirectory', `not a directory: ${path}`);
      }
      throw new StorageError('NotFound', `no such directory: ${path}`);
    }
    const pages = new Pages();
    for (;;) {
      const token = pages.after(page);
      // From the second page on, the next one is fetched while this one is sent
      // (at most two pages held); the first page still goes out before any other is asked for.
      const next = token && !first ? fetch(token) : undefined;
      next?.catch(() => undefined); // awaited below, unless the consumer stops early
      const entries = entriesOf(page, prefix);
      if (options.directoryTimes !== false) await this.addDirectoryTimes(entries, prefix, signal);
      yield entries;
      if (!token) return;
      page = await (next ?? fetch(token));
      first = false;
    }
  }

  /**
   * One HEAD validates; the GET starts only when the stream is first read, so
   * no S3 socket waits on a data connection that is still being opened. The
   * stream reads the HEAD's version only (IfMatch) and resumes where it
   * stopped when the body stalls or breaks (see ObjectStream). An object that
   * changes between the HEAD and a GET fails the stream with Unavailable: the
   * transfer is cut off (451) and a new RETR reads the new version.
   */
  async read(path: StoragePath, options: ReadOptions = {}): Promise<OpenedRead> {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StorageError('InvalidRange', `bad offset ${start}`);
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const key = this.key(path);
    const head = await this.headFile(key, options.signal);
    if (!head) throw await this.notFileError(path, undefined, options.signal);
    const size = head.ContentLength;
    if (start > size) throw new StorageError('InvalidRange', `offset ${start} is beyond the end of ${path} (${size} bytes)`);
    const fetch = async (from: number, signal: AbortSignal): Promise<Readable> => {
      // Without an ETag no GET can be held to the version the HEAD saw: a broken body is not resumed.
      if (from !== start && head.ETag === undefined) throw new StorageError('Unavailable', `${path} has no ETag: its read cannot be resumed`);
      const out = await this.transfer.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${from}-${size - 1}`, IfMatch: head.ETag }),
        { abortSignal: signal },
      );
      return checkedBody(out, { from, to: size, size, etag: head.ETag });
    };
    const stream = new ObjectStream({
      fetch,
      start,
      end: size,
      signal: options.signal,
      classify: (err) => classify(err, `read ${path}`),
      onResume: (at, err) => this.logger?.info({ event: 'read-resumed', key, at, err }, 'resumed a stalled or broken object read'),
    });
    return { stream, size: size - start };
  }

  // Takes ownership of body. An aborted write rejects with StorageError('Unavailable', 'write aborted').
  async write(path: StoragePath, body: Readable, options: WriteOptions = {}): Promise<WriteResult> {
    const { signal } = options;
    const streams: Readable[] = [body];
    // Ending the streams makes the write loop fail at once, whatever it waits for; its catch then aborts the upload.
    const onAbort = (): void => {
      const reason = abortError(signal);
      for (const stream of streams) stream.destroy(reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let ended: (() => void) | undefined;
    try {
      if (signal?.aborted) throw abortError(signal);
      const key = this.key(path);
      ended = this.directories.writes.start(key);
      const { offset, etag, keeps } = await this.prepareWrite(path, key, options);
      const job: WriteJob = {
        key,
        offset,
        etag,
        base: keeps && etag !== undefined ? { IfMatch: etag } : keeps || options.createOnly ? { IfNoneMatch: '*' } : undefined,
        body,
        streams,
        metadata: { ...encodeMetadata(options.metadata), [WRITE_ID_METADATA]: randomUUID() },
        publishOnAbort: options.onAbort === 'publish',
        onPartial: options.onPartial,
        tally: new Tally(),
        signal,
        beforePublish: options.beforePublish,
      };
      if (signal?.aborted) throw abortError(signal);
      await this.store(job);
      return { size: job.tally.bytes, sha256: job.tally.complete ? job.tally.hex() : undefined };
    } catch (err) {
      for (const stream of streams) stream.destroy();
      if (signal?.aborted) throw new StorageError('Unavailable', 'write aborted', { cause: signal.reason });
      throw classify(err, `write ${path}`);
    } finally {
      ended?.();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async hash(path: StoragePath, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<HashResult> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const key = this.key(path);
    const head = await this.headFile(key, signal);
    if (!head) throw await this.notFileError(path, undefined, signal);
    const stored = algorithm === 'SHA-256' ? (head.Metadata?.[SHA256_METADATA] ?? (await this.taggedHash(key, head.ETag))) : undefined;
    if (stored !== undefined && /^[0-9a-f]{64}$/.test(stored)) {
      return { algorithm, hash: stored, size: head.ContentLength, stored: true };
    }
    // IfMatch: the hash is of the version the HEAD saw, never of two versions mixed.
    const size = head.ContentLength;
    const out = await this.call(`hash ${path}`, () =>
      this.transfer.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, IfMatch: head.ETag }), { abortSignal: signal }),
    );
    try {
      const digested = await digestStream(checkedBody(out, { from: 0, to: size, size, etag: head.ETag }), algorithm, signal);
      if (digested.size !== size) throw new StorageError('Unavailable', `read ${digested.size} bytes of the ${size} of ${path}`);
      return { algorithm, hash: digested.hash, size, stored: false };
    } catch (err) {
      (out.Body as Readable).destroy();
      throw classify(err, `hash ${path}`);
    }
  }

  async mkdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '' || (await this.lookup(path, signal))) throw new StorageError('Exists', `already exists: ${path}`);
    await this.requireDirectory(parentPath(path), signal);
    await this.putMarker(path, signal);
  }

  async mkdirAll(path: StoragePath, signal?: AbortSignal): Promise<void> {
    const segments = path === '' ? [] : path.split('/');
    for (let i = 1; i <= segments.length; i++) {
      const level = segments.slice(0, i).join('/');
      const info = await this.lookup(level, signal);
      if (!info) await this.putMarker(level, signal);
      else if (!info.isDirectory) throw new StorageError('NotADirectory', `not a directory: ${level}`);
    }
  }

  async rmdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    try {
      const marked = this.parentMarked(path, signal);
      await this.removeDirectory(path, signal);
      await this.keepParent(path, marked, signal);
    } finally {
      this.directories.forget();
    }
  }

  /**
   * Keeps the directory that held `path` once its last key is gone (a DELE,
   * an RMD, a rename out of it). A directory that was only a key prefix (keys
   * written by another tool, with no `dir/` marker) would vanish with it: the
   * session's working directory, and the RMD that lftp's `rm -r` or rclone's
   * purge sends after the DELEs, would answer 550. It gets its marker, as a
   * directory stays on a file system until RMD. A parent with its marker
   * needs nothing (`marked`, asked alongside the removal: one HEAD); one
   * without, a listing of one key. Once the removal is done this only tidies:
   * a failure is logged, not answered.
   */
  private async keepParent(path: StoragePath, marked: Promise<boolean>, signal?: AbortSignal): Promise<void> {
    const parent = parentPath(path);
    if (parent === '' || (await marked)) return;
    try {
      const page = await this.listPage(this.dirPrefix(parent), undefined, undefined, signal, 1);
      if ((page.Contents?.length ?? 0) === 0) await this.putMarker(parent, signal);
    } catch (err) {
      this.logger?.warn({ err, path: parent }, 'could not keep a directory whose last entry went');
    }
  }

  /** Whether the directory that holds `path` has its `dir/` marker (the root needs none); false if S3 cannot say. */
  private parentMarked(path: StoragePath, signal?: AbortSignal): Promise<boolean> {
    const parent = parentPath(path);
    if (parent === '') return Promise.resolve(true);
    return this.headFile(this.dirPrefix(parent), signal).then(
      (head) => head !== undefined,
      () => false,
    );
  }

  private async removeDirectory(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '') throw new StorageError('Denied', 'cannot remove the root directory');
    const info = await this.stat(path, signal);
    if (!info.isDirectory) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    const marker = this.dirPrefix(path);
    const journal = marker + RENAME_JOURNAL;
    // Only two keys are no content (the marker and a journal), so three keys tell.
    const page = await this.listPage(marker, undefined, undefined, signal, 3);
    const keys = (page.Contents ?? []).map((o) => o.Key);
    const notEmpty = new StorageError('NotEmpty', `directory not empty: ${path}`);
    if (keys.some((k) => k !== marker && k !== journal) || this.directories.writes.under(marker)) throw notEmpty;
    // From here on a new upload asks S3 whether the directory is there; one that already asked, and
    // lands or is still running once the marker is gone, is seen below and keeps the directory.
    this.directories.forget();
    // A journal left by a failed rename into this directory is no content: the user undid or gave up that rename.
    await this.deleteKeys(keys.filter((k): k is string => k !== undefined), signal);
    // What an upload learned while the marker was being deleted (that it was there) is forgotten too.
    this.directories.forget();
    if (this.directories.writes.under(marker) || pageHasKeys(await this.listPage(marker, undefined, undefined, signal, 1))) {
      await this.putMarker(path);
      throw notEmpty;
    }
  }

  async delete(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const key = this.key(path);
    const marked = this.parentMarked(path, signal);
    // DeleteObject succeeds for missing keys, so look first to answer NotFound.
    if (!(await this.headFile(key, signal))) throw await this.notFileError(path, undefined, signal);
    try {
      await this.call(`delete ${path}`, () =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal }),
      );
      await this.keepParent(path, marked, signal);
    } finally {
      // The last key under a directory may have gone, and the directory with it.
      this.directories.forget();
    }
  }

  async rename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void> {
    try {
      // A rename within one directory leaves it something: nothing to keep.
      const marked = parentPath(from) === parentPath(to) ? Promise.resolve(true) : this.parentMarked(from, signal);
      await this.move(from, to, signal);
      await this.keepParent(from, marked, signal);
    } finally {
      this.directories.forget();
    }
  }

  private async move(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void> {
    if (from === '') throw new StorageError('Denied', 'cannot rename the root directory');
    if (from === to || to.startsWith(`${from}/`)) {
      throw new StorageError('InvalidName', `cannot move ${from} onto or into itself`);
    }
    const source = await this.stat(from, signal);
    await this.requireDirectory(parentPath(to), signal);
    const target = await this.lookup(to, signal);
    let resumed: Resumed | undefined;
    if (target && (target.isDirectory || source.isDirectory)) {
      // The one existing target allowed: what an interrupted rename of this same directory left.
      resumed = source.isDirectory && target.isDirectory ? await this.unfinishedRename(from, to, signal) : undefined;
      if (!resumed) throw new StorageError('Exists', `already exists: ${to}`);
    }
    if (source.isDirectory) {
      // An upload publishes where it was sent: after the copies, it would bring the old directory back.
      const moved = this.directories.writes.startMove(this.dirPrefix(from));
      try {
        await this.renameDirectory(from, to, signal, resumed);
      } finally {
        moved();
      }
    } else {
      const head = await this.headFile(this.key(from), signal);
      if (!head) throw new StorageError('NotFound', `no such file: ${from}`);
      await this.copy(this.key(from), this.key(to), head.ContentLength, head.ETag, signal);
      // The original goes only if it is still the version copied (see deleteOriginals).
      const now = await this.headFile(this.key(from), signal);
      const kept = now?.ETag !== head.ETag || (await this.deleteKeys([{ Key: this.key(from), ETag: head.ETag }], signal)).length > 0;
      if (now && kept) {
        this.logger?.warn({ event: 'rename-left-changed', from, to }, 'a file written during its rename was left in place');
        throw new StorageError('Unavailable', `${from} changed during the rename and was left there; ${to} holds the earlier version`);
      }
    }
  }

  /**
   * Aborts the multipart uploads under this storage's prefix that were started
   * more than `olderThanMs` ago and that this process does not have open:
   * those of a server that was killed mid-transfer. The age must exceed the
   * longest transfer another running instance on the same prefix may still be making.
   */
  async sweep(olderThanMs: number, signal?: AbortSignal): Promise<{ removed: number }> {
    const prefix = this.dirPrefix('');
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    const pages = new Pages();
    do {
      const page = await this.call('sweep', () =>
        this.client.send(
          // No Prefix: MinIO lists uploads by exact key only, so a prefix finds nothing there; filter here instead.
          new ListMultipartUploadsCommand({ Bucket: this.bucket, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker, EncodingType: 'url' }),
          { abortSignal: signal },
        ),
      );
      for (const upload of page.Uploads ?? []) {
        signal?.throwIfAborted();
        const { UploadId: uploadId, Initiated: initiated } = upload;
        // Names as stored (see decodeNames).
        const key = decodeName(upload.Key, page.EncodingType);
        if (!key?.startsWith(prefix) || !uploadId || this.openUploads.has(uploadId)) continue;
        if (!initiated || initiated.getTime() > cutoff) continue;
        // aborts.abort never throws; an upload it could not abort is retried later and not counted.
        const before = this.aborts.pending;
        await this.aborts.abort(key, uploadId);
        if (this.aborts.pending === before) removed++;
      }
      // The marker is encoded too (S3 encodes NextKeyMarker with the keys); the next request names the key itself.
      const marker = page.NextKeyMarker === undefined ? undefined : `${page.NextKeyMarker}\n${page.NextUploadIdMarker ?? ''}`;
      const first = page.Uploads?.[0];
      const more = pages.next(page.IsTruncated, marker, first && `${first.Key}\n${first.UploadId}`) !== undefined;
      keyMarker = more ? decodeName(page.NextKeyMarker, page.EncodingType) : undefined;
      uploadIdMarker = more ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    if (removed > 0) this.logger?.info({ event: 'sweep', removed }, 'removed multipart uploads left by a crashed server');
    return { removed };
  }

  async close(): Promise<void> {
    this.aborts.close();
    this.client.destroy();
    this.transfer.destroy();
    this.copies.destroy();
  }

  async setModificationTime(): Promise<void> {
    throw new StorageError('Unsupported', 'Setting the modification time is not supported on S3 storage');
  }

  async ping(): Promise<void> {
    try {
      // Under a prefix, a one-key listing inside it: a policy may grant s3:ListBucket only for
      // prefixes there (the CDK stack does), and HeadBucket names none, so it would be refused.
      // Without one, HeadBucket, which needs only the s3:ListBucket the server needs anyway.
      if (this.prefix !== '') await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.dirPrefix(''), MaxKeys: 1 }));
      else await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const error = classify(err, `bucket ${this.bucket}`);
      // HEAD has no error body: a listing tells wrong credentials from a refused bucket.
      if (isBodiless403(err)) await this.listPage(this.dirPrefix(''), undefined, undefined, undefined, 1);
      throw error;
    }
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
  private async lookup(path: StoragePath, signal?: AbortSignal): Promise<FileInfo | undefined> {
    if (path === '') return this.stat(path);
    const head = await this.headFile(this.key(path), signal);
    if (head) return { name: baseName(path), isDirectory: false, size: head.ContentLength, mtime: head.LastModified ?? EPOCH };
    const prefix = this.dirPrefix(path);
    const page = await this.listPage(prefix, undefined, undefined, signal, 1);
    const first = page.Contents?.[0];
    if (!first) return undefined;
    // The marker sorts before every other key under the prefix, so it comes first if present.
    const mtime = first.Key === prefix ? (first.LastModified ?? EPOCH) : EPOCH;
    return { name: baseName(path), isDirectory: true, size: 0, mtime };
  }

  /**
   * Sets each directory entry's mtime to its marker's LastModified, where
   * there is a marker, until a HEAD takes longer than
   * DIRECTORY_TIME_TIMEOUT_MS: S3 is then stalling, and the page's other
   * directories keep the epoch.
   */
  private async addDirectoryTimes(entries: FileInfo[], prefix: string, signal?: AbortSignal): Promise<void> {
    const dirs = entries.filter((e) => e.isDirectory);
    const stalled = new AbortController();
    const wanted = signal ? AbortSignal.any([signal, stalled.signal]) : stalled.signal;
    await mapLimit(dirs, DIRECTORY_TIME_CONCURRENCY, async (entry) => {
      const key = checkKey(`${prefix}${entry.name}/`);
      try {
        const marker = await directoryTimeSlots.run(() => {
          const deadline = AbortSignal.timeout(DIRECTORY_TIME_TIMEOUT_MS);
          return this.headFile(key, AbortSignal.any([wanted, deadline])).catch((err: unknown) => {
            if (deadline.aborted) stalled.abort();
            throw err;
          });
        }, wanted);
        if (marker?.LastModified) entry.mtime = marker.LastModified;
      } catch (err) {
        // A date is not worth failing (or holding) the listing for; the listing's own requests report S3's state.
        if (signal?.aborted) throw err;
        this.logger?.debug({ err, key }, 'no date for a directory marker');
      }
    });
  }

  /** The object's HEAD, with its size (a HEAD may leave it out: then Unavailable); undefined if there is none. */
  private async headFile(key: string, signal?: AbortSignal): Promise<Head | undefined> {
    let head: HeadObjectCommandOutput;
    try {
      head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
    } catch (err) {
      const error = classify(err, `stat ${key}`);
      if (error.code === 'NotFound') return undefined;
      // A HEAD 403 has no error code: one listing (with an error body) tells a refused key
      // from refused credentials, and costs a request only on this failure path.
      if (isBodiless403(err)) await this.listPage(key, undefined, undefined, signal, 1);
      throw error;
    }
    // RFC 9110 lets a HEAD leave the length out; it is not a 0-byte file.
    if (head.ContentLength === undefined) throw new StorageError('Unavailable', `the storage gave no size for ${key}`);
    return { ...head, ContentLength: head.ContentLength };
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
  private async notFileError(path: StoragePath, cause?: unknown, signal?: AbortSignal): Promise<StorageError> {
    const info = await this.lookup(path, signal);
    if (info?.isDirectory) return new StorageError('IsADirectory', `is a directory: ${path}`, { cause });
    return new StorageError('NotFound', `no such file: ${path}`, { cause });
  }

  /**
   * Resolves when path is a directory; NotFound otherwise (also when it is a
   * file). One round trip: a directory is a prefix with a key under it (its
   * marker, or any object); none for a directory seen lately (KnownDirectories).
   * Its callers (MKD, rename) change the tree and forget what is known right
   * after, so what it finds is not kept.
   */
  private async requireDirectory(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '') return;
    const prefix = this.dirPrefix(path);
    if (this.directories.get(prefix)) return;
    const page = await this.listPage(prefix, undefined, undefined, signal, 1);
    if ((page.Contents?.length ?? 0) === 0) throw new StorageError('NotFound', `no such directory: ${path}`);
  }

  /**
   * Whether path names a directory (some key lies under `path/`); NotFound
   * when its parent is not a directory. One page of the parent, with the
   * delimiter, answers both for a parent of up to a page of entries, and is
   * remembered (KnownDirectories): the next STORs into it ask S3 nothing. A
   * bigger parent costs a one-key listing of `path/` per STOR.
   */
  private async namesDirectory(path: StoragePath, signal?: AbortSignal): Promise<boolean> {
    const parent = parentPath(path);
    const prefix = this.dirPrefix(parent);
    let known = this.directories.get(prefix);
    if (!known) {
      const generation = this.directories.generation;
      const page = await this.listPage(prefix, '/', undefined, signal);
      if (parent !== '' && !pageHasKeys(page)) throw new StorageError('NotFound', `no such directory: ${parent}`);
      known = this.directories.add(prefix, generation, { subdirectories: page.IsTruncated ? undefined : subdirectoryNames(page, prefix) });
    }
    const name = baseName(path);
    // XML 1.0 cannot carry most control characters, so a listing may alter them (see subdirectoryNames).
    if (known.subdirectories && !CONTROL_CHARACTERS.test(name)) return known.subdirectories.has(name);
    const page = await this.listPage(this.dirPrefix(path), undefined, undefined, signal, 1);
    return (page.Contents?.length ?? 0) > 0;
  }

  private listPage(
    prefix: string,
    delimiter: string | undefined,
    token: string | undefined,
    signal?: AbortSignal,
    maxKeys = this.pageSize,
  ): Promise<ListObjectsV2CommandOutput> {
    // URL-encoded names: XML 1.0 cannot carry most control characters, nor U+FFFE/U+FFFF, so
    // without it a store sends U+FFFD for them, and the listed name is not the key.
    const input = { Bucket: this.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token, MaxKeys: maxKeys, EncodingType: 'url' as const };
    return this.call(`list ${prefix}`, async () => decodeNames(await this.client.send(new ListObjectsV2Command(input), { abortSignal: signal })));
  }

  /** Checks the target and parent of a write; returns the byte offset to keep and the ETag it belongs to. */
  private async prepareWrite(
    path: StoragePath,
    key: string,
    options: WriteOptions,
  ): Promise<{ offset: number; etag: string | undefined; keeps: boolean }> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    // Small files are latency-bound: one round trip at most, none into a directory seen lately.
    // A plain STOR needs no HeadObject: only APPE and REST keep existing bytes.
    const keeps = options.append === true || (options.offset ?? 0) > 0;
    const { signal } = options;
    const [head, isDirectory] = await Promise.all([keeps ? this.headFile(key, signal) : undefined, this.namesDirectory(path, signal)]);
    if (!head && isDirectory) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const size = head?.ContentLength ?? 0;
    const offset = options.append ? size : (options.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new StorageError('InvalidRange', `offset ${offset} is beyond the end of ${path} (${size} bytes)`);
    }
    return { offset, etag: head?.ETag, keeps };
  }

  /** The first n bytes of the object we looked at (IfMatch: a concurrent replacement fails the write instead of splicing two objects). */
  private async openPrefix(key: string, n: number, etag: string | undefined, signal?: AbortSignal): Promise<Readable> {
    const out = await this.call(`read ${key}`, () =>
      this.transfer.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=0-${n - 1}`, IfMatch: etag }), {
        abortSignal: signal,
      }),
    );
    return checkedBody(out, { from: 0, to: n, etag });
  }

  /**
   * Every write: the kept prefix (APPE, REST + STOR), then the body, through
   * our own multipart writer. lib-storage's Upload is not used: its final
   * CompleteMultipartUpload cannot be held back once the session is aborted,
   * and it can neither start with copied parts nor publish a partial upload.
   * A body shorter than one part becomes one PutObject that carries its
   * SHA-256; a longer one has its hash recorded afterwards.
   */
  private async store(job: WriteJob): Promise<void> {
    const writer = this.multipartWriter(job.key, { Metadata: job.metadata }, job.signal, job.base, async () => {
      const head = await this.headFile(job.key).catch((err: unknown) => {
        // S3 stored it or not, and will not say: a client that sends it again could append twice.
        this.logger?.error({ event: 'upload-unconfirmed', key: job.key, err }, 'an upload\'s publishing request failed and S3 could not be asked whether it landed');
        throw new StorageError('Unconfirmed', `write ${job.key}: publishing failed and its outcome is unknown`, { cause: err });
      });
      return head && head.Metadata?.[WRITE_ID_METADATA] === job.metadata[WRITE_ID_METADATA] ? head.ETag : undefined;
    });
    let received = 0;
    try {
      await this.keepPrefix(job, writer);
      for await (const chunk of job.tally.through(job.body)) {
        received += chunk.length;
        await writer.push(chunk);
      }
      const hashed = job.tally.complete;
      const done = await writer.finish(hashed ? withHash(job.metadata, job.tally.hex()) : job.metadata, job.beforePublish);
      if (done.multipart && hashed) await this.storeHash(job, done.etag);
    } catch (err) {
      if (job.publishOnAbort && received > 0) await this.publishPartial(job, writer);
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
    const prefix = await this.openPrefix(job.key, job.offset, job.etag, job.signal);
    job.streams.push(prefix);
    // Exactly the bytes kept: a body that ends early (or goes on) would splice a wrong prefix.
    let kept = 0;
    for await (const chunk of job.tally.through(prefix)) {
      kept += chunk.length;
      if (kept > job.offset) break;
      await writer.push(chunk);
    }
    if (kept !== job.offset) throw new StorageError('Unavailable', `read ${kept} bytes of the ${job.offset} kept of ${job.key}`);
  }

  /** The keepPartialUploads policy: what was received becomes the object; if that fails, nothing does. */
  private async publishPartial(job: WriteJob, writer: MultipartWriter): Promise<void> {
    const { key } = job;
    try {
      const bytes = await writer.publishReceived();
      this.logger?.info({ event: 'partial-upload-published', key, bytes });
      if (bytes > 0) job.onPartial?.(bytes);
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

  /** A writer whose part uploads go through the transfer client and whose open upload a sweep leaves alone. */
  private multipartWriter(
    key: string,
    create: MultipartWriterOptions['create'],
    signal?: AbortSignal,
    base?: MultipartWriterOptions['base'],
    landed?: MultipartWriterOptions['landed'],
  ): MultipartWriter {
    return new MultipartWriter({
      base,
      landed,
      client: this.client,
      transferClient: this.transfer,
      copyClient: this.copies,
      bucket: this.bucket,
      key,
      partSize: this.config.partSize,
      queueSize: this.config.queueSize,
      create,
      aborts: this.aborts,
      signal,
      onUpload: (uploadId, open) => void (open ? this.openUploads.add(uploadId) : this.openUploads.delete(uploadId)),
    });
  }

  private async putMarker(path: StoragePath, signal?: AbortSignal): Promise<void> {
    const marker = this.dirPrefix(path);
    try {
      await this.call(`mkdir ${path}`, () =>
        this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: marker, Body: new Uint8Array(0) }), { abortSignal: signal }),
      );
    } finally {
      // Its parent has a subdirectory more.
      this.directories.forget();
    }
  }

  /** Server-side copy of one object (metadata and tags included), part by part above the threshold. */
  private async copy(from: string, to: string, size: number, etag: string | undefined, signal?: AbortSignal): Promise<string> {
    if (size > this.multipartCopyThreshold) return this.multipartCopy(from, to, size, etag, signal);
    const out = await this.call(`copy ${from}`, () =>
      this.copies.send(
        new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: copySource(this.bucket, from), CopySourceIfMatch: etag }),
        { abortSignal: signal },
      ),
    );
    return out.CopyObjectResult?.ETag ?? '';
  }

  private async multipartCopy(from: string, to: string, size: number, etag: string | undefined, signal?: AbortSignal): Promise<string> {
    // A multipart upload does not inherit the source's headers or tags; carry them over.
    const head = await this.headFile(from, signal);
    if (!head) throw new StorageError('NotFound', `no such file: ${from}`);
    // Tags that cannot be read (no permission, a store without tagging) are not carried; the copy goes on.
    const tags = await this.client
      .send(new GetObjectTaggingCommand({ Bucket: this.bucket, Key: from }), { abortSignal: signal })
      .catch(() => undefined);
    const writer = this.multipartWriter(to, {
        Metadata: head.Metadata,
        Tagging: (tags?.TagSet ?? []).map((t) => `${encodeURIComponent(t.Key ?? '')}=${encodeURIComponent(t.Value ?? '')}`).join('&') || undefined,
        ContentType: head.ContentType,
        ContentEncoding: head.ContentEncoding,
        ContentDisposition: head.ContentDisposition,
        ContentLanguage: head.ContentLanguage,
        CacheControl: head.CacheControl,
      }, signal);
    try {
      await writer.copyRange(copySource(this.bucket, from), size, etag);
      return (await writer.finish()).etag ?? '';
    } catch (err) {
      await writer.abort();
      throw classify(err, `copy ${from}`);
    }
  }

  /**
   * Lists every object under the old prefix first (so the longest new key is
   * checked before anything is written), copies them with bounded
   * parallelism, then deletes each original only if it still is the version
   * that was copied. A failure leaves the copies made so far and a journal in
   * the target: every object then exists under its old name, some also under
   * the new one, and running the same rename again finishes the job (or the
   * user deletes the copies and removes the target directory to undo it).
   *
   * Run again (`resumed`), the target may hold files stored there since. The
   * journal holds a record (journalBody) from the start of a run (empty on a
   * first run, the record found on a resumed one), written again when the run
   * stops copying and before any original is deleted. A target key is written
   * over if it is missing, or if it holds the recorded copy of a source a run
   * left in place because it changed after being copied; one that holds the
   * same object as its source (the same ETag), or the recorded copy of the
   * source as it still is, counts as copied; any other stays, and so does its
   * source (451), for the user to choose. A part-by-part copy made by a run
   * that was killed while copying is such a file (its ETag is not its
   * source's): the user removes one of the two. A journal of an earlier
   * version holds no record: the target is then written over. A journal whose
   * own delete failed after a finished run is thus harmless.
   */
  private async renameDirectory(from: StoragePath, to: StoragePath, signal?: AbortSignal, resumed?: Resumed): Promise<void> {
    const src = this.dirPrefix(from);
    const dst = this.dirPrefix(to);
    const journal = checkKey(dst + RENAME_JOURNAL);
    // Objects are kept in memory (about 150 bytes each): what was copied, in which version.
    const objects: _Object[] = [];
    let longest = 0;
    for await (const page of this.objectPages(src, signal)) {
      for (const o of page) {
        objects.push({ Key: o.Key, ETag: o.ETag, Size: o.Size });
        longest = Math.max(longest, Buffer.byteLength(o.Key as string) - Buffer.byteLength(src));
      }
    }
    if (Buffer.byteLength(dst) + longest > MAX_PATH_BYTES) {
      throw new StorageError('InvalidName', `renaming ${from} to ${to} would make a key longer than ${MAX_PATH_BYTES} bytes`);
    }
    /** The copies made, by target key (the journal records those not told by their ETag alone). */
    const copies = new Map<string, RecordedCopy>(resumed?.copies);
    /**
     * Sources a run left in place because they changed after it copied them: their targets hold a stale
     * copy. One the user has removed since is no longer one: the copy is what the user kept.
     */
    const listed = new Set(objects.map((o) => o.Key));
    const changed = new Set([...(resumed?.left ?? [])].filter((key) => listed.has(key)));
    const record = () => journalBody(src, dst, copies, changed);
    const writeRecord = () =>
      this.call(`rename ${from}`, () =>
        this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: journal, Body: record() }), { abortSignal: signal }),
      );
    /** On a resume, what the target holds now. */
    const present = new Map<string, string | undefined>();
    if (resumed) for await (const page of this.objectPages(dst, signal)) for (const o of page) present.set(o.Key as string, o.ETag);
    // The journal holds a record from the start (empty on a first run): whatever stops this run, and
    // whatever S3 refuses later, the next run writes over nothing it cannot tell for its own copy.
    await writeRecord();
    const progress = new RenameProgress(this.logger, from, to);
    /** Originals whose version was copied, by key: the only ones that may be deleted. */
    const copied = new Map<string, string | undefined>();
    try {
      await mapLimit(objects, this.renameConcurrency, async (o) => {
        signal?.throwIfAborted();
        const key = o.Key as string;
        const target = dst + key.slice(src.length);
        // A journal under the source belongs to an earlier rename into `from`; it moves nowhere.
        if (key !== src + RENAME_JOURNAL) {
          const recorded = resumed?.copies ? copies.get(target) : false;
          const there = present.has(target) ? targetState(o.ETag, present.get(target), recorded, changed.has(key)) : 'free';
          if (there === 'other') return;
          if (there === 'free') {
            try {
              copies.set(target, { etag: await this.copy(key, target, o.Size ?? 0, o.ETag, signal), of: o.ETag });
            } catch (err) {
              // Changed since it was listed: it stays where it is, in its new version, and is not deleted.
              if (isPreconditionFailed(err)) return;
              throw err;
            }
          }
          changed.delete(key);
        }
        copied.set(key, o.ETag);
        progress.copied(o.Size ?? 0);
      });
      // Before any original goes: a run that stops from here on leaves this record.
      await writeRecord();
    } catch (err) {
      const error = signal?.aborted ? new StorageError('Unavailable', 'rename aborted', { cause: err }) : classify(err, `rename ${from}`);
      this.logger?.warn({ event: 'rename-failed', from, to, copied: progress.objects, err: error }, 'directory rename failed; run it again to finish');
      await this.recordJournal(journal, record());
      throw error;
    }
    const left = await this.deleteOriginals(src, copied, signal);
    if (left.length > 0) {
      // The journal stays: running the rename again moves what changed, over its stale copy; a source
      // that was not copied (another file is in the target) is no change of this run's.
      for (const key of left) if (copied.has(key)) changed.add(key);
      this.logger?.warn({ event: 'rename-left-changed', from, to, left: left.length, keys: left.slice(0, 20) }, 'objects changed during a directory rename, or differing from a file of the target, were left in place');
      await this.recordJournal(journal, record());
      throw new StorageError(
        'Unavailable',
        `${left.length} objects under ${from} were left there: changed during the rename, or a different file of that name is in ${to}; compare and remove one, then run the rename again`,
      );
    }
    // Every object has moved. A journal left behind holds its record, and lets no later rename write over anything.
    await this.deleteKeys([journal], signal).catch((err: unknown) => this.logger?.warn({ err, journal }, 'could not remove the journal of a finished rename'));
    progress.done();
  }

  /**
   * Writes a stopped rename's journal, with its record, for the next run.
   * S3 may be what stopped it: a few seconds, and a failure is logged.
   */
  private async recordJournal(journal: string, body: string): Promise<void> {
    await this.client
      .send(new PutObjectCommand({ Bucket: this.bucket, Key: journal, Body: body }), { abortSignal: AbortSignal.timeout(JOURNAL_AFTER_FAILURE_MS) })
      .catch((err: unknown) => this.logger?.warn({ err, journal }, 'could not record the copies of a stopped rename'));
  }

  /**
   * Deletes the originals of a directory rename that still have the ETag that
   * was copied; returns the keys left in place (changed or new). Each page is
   * listed right before its delete, which also carries the ETag: a store with
   * conditional deletes (AWS S3) refuses a changed object itself; on one
   * without (MinIO at our pinned version ignores it), a write landing between
   * the listing and the delete of its page is the residual risk.
   */
  private async deleteOriginals(src: string, copied: ReadonlyMap<string, string | undefined>, signal?: AbortSignal): Promise<string[]> {
    const left: string[] = [];
    for await (const page of this.objectPages(src, signal)) {
      const unchanged: Array<{ Key: string; ETag?: string }> = [];
      for (const o of page) {
        const key = o.Key as string;
        if (copied.has(key) && copied.get(key) === o.ETag) unchanged.push({ Key: key, ETag: o.ETag });
        else left.push(key);
      }
      left.push(...(await this.deleteKeys(unchanged, signal)));
    }
    return left;
  }

  /**
   * The copies recorded by an unfinished rename from `from` whose journal is
   * in `to` (none, if the run that stopped could not record them), or
   * undefined when `to` holds no such journal.
   */
  private async unfinishedRename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<Resumed | undefined> {
    const journal = checkKey(this.dirPrefix(to) + RENAME_JOURNAL);
    let text: string | undefined;
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: journal }), { abortSignal: signal });
      text = await out.Body?.transformToString();
    } catch (err) {
      const error = classify(err, `rename ${from}`);
      if (error.code === 'NotFound') return undefined;
      throw error;
    }
    const record = parseJournal(text ?? '');
    return record.from === this.dirPrefix(from) ? { copies: record.copies, left: record.left } : undefined;
  }

  /** Every object under a prefix (no delimiter), page by page. */
  private async *objectPages(prefix: string, signal?: AbortSignal): AsyncGenerator<_Object[]> {
    let token: string | undefined;
    const pages = new Pages();
    do {
      const page = await this.listPage(prefix, undefined, token, signal);
      token = pages.after(page);
      yield (page.Contents ?? []).filter((o) => o.Key !== undefined);
    } while (token);
  }

  /**
   * Deletes keys in batches, each only if it still has its ETag when one is
   * given and the store honours that; returns the keys refused for a changed
   * ETag. Any other failure throws.
   */
  private async deleteKeys(keys: ReadonlyArray<string | { Key: string; ETag?: string }>, signal?: AbortSignal): Promise<string[]> {
    const changed: string[] = [];
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      signal?.throwIfAborted();
      const all = keys.slice(i, i + DELETE_BATCH).map((k) => (typeof k === 'string' ? { Key: k } : k));
      // DeleteObjects names its keys in an XML body; a key XML cannot carry goes in a URL, on its own.
      const batch = all.filter((k) => !XML_UNSAFE.test(k.Key));
      for (const { Key, ETag } of all.filter((k) => XML_UNSAFE.test(k.Key))) {
        try {
          await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key, IfMatch: ETag }), { abortSignal: signal });
        } catch (err) {
          if (!isPreconditionFailed(err)) throw classify(err, `delete ${Key}`);
          changed.push(Key);
        }
      }
      if (batch.length === 0) continue;
      const out = await this.call('delete objects', () =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }), { abortSignal: signal }),
      );
      for (const failed of out.Errors ?? []) {
        if (failed.Code === 'PreconditionFailed') {
          changed.push(failed.Key ?? '');
          continue;
        }
        throw classify(Object.assign(new Error(failed.Message ?? 'delete failed'), { name: failed.Code }), `delete ${failed.Key}`);
      }
    }
    return changed;
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

function clientConfig(config: S3StorageConfig, maxSockets: number): S3ClientConfig {
  return {
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: config.credentials,
    maxAttempts: 3,
    // Without this, every body of 2 MiB or more (each UploadPart) carries
    // `Expect: 100-continue`, and the SDK then sends it on a fresh, non-keep-alive
    // connection of its own (a TCP, and on AWS a TLS, handshake per part) after
    // waiting a round trip for the 100. A refused part wastes one part's upload; that is all it saved.
    expectContinueHeader: false,
    // Bodies are Buffers, whose SHA-256 SigV4 already signs and S3 checks
    // (x-amz-content-sha256): a CRC32 of each as well was a second pass over every byte for nothing.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    // requestTimeout bounds each request until its response headers; socketTimeout
    // bounds silence on the socket afterwards (a stalled body). Both are deadlines.
    requestHandler: {
      requestTimeout: config.requestTimeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: config.requestTimeoutMs,
      connectionTimeout: Math.min(config.requestTimeoutMs, 10_000),
      httpAgent: { keepAlive: true, maxSockets },
      httpsAgent: { keepAlive: true, maxSockets },
    },
  };
}

const ERROR_CODES: Record<string, StorageErrorCode> = {
  NoSuchKey: 'NotFound',
  // Our own multipart upload is gone (a sweep, a lifecycle rule): nothing about the path is wrong.
  NoSuchUpload: 'Unavailable',
  NotFound: 'NotFound',
  // A missing bucket is a configuration fault, not a missing path.
  NoSuchBucket: 'Unavailable',
  AccessDenied: 'Denied',
  Forbidden: 'Denied',
  AllAccessDisabled: 'Denied',
  // The server's own credentials, signature or clock: the administrator's to fix, never the client's path.
  InvalidAccessKeyId: 'BackendRefused',
  SignatureDoesNotMatch: 'BackendRefused',
  RequestTimeTooSkewed: 'BackendRefused',
  ExpiredToken: 'BackendRefused',
  InvalidToken: 'BackendRefused',
  TokenRefreshRequired: 'BackendRefused',
  InvalidSecurity: 'BackendRefused',
  AuthorizationHeaderMalformed: 'BackendRefused',
  AuthorizationQueryParametersError: 'BackendRefused',
  MissingSecurityHeader: 'BackendRefused',
  CredentialsProviderError: 'BackendRefused',
  KeyTooLongError: 'InvalidName',
  InvalidObjectName: 'InvalidName',
  XMinioInvalidObjectName: 'InvalidName',
  XMinioParentIsObject: 'NotADirectory',
  InvalidRange: 'InvalidRange',
  EntityTooLarge: 'QuotaExceeded',
  XMinioStorageFull: 'QuotaExceeded',
  XMinioAdminBucketQuotaExceeded: 'QuotaExceeded',
  // Only our own If-Match conditions fail this way: the object changed under a read, copy or
  // delete. Nothing about the path is wrong and trying again works, so Unavailable (451).
  PreconditionFailed: 'Unavailable',
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
  const name = s3ErrorName(err);
  const status = e.$metadata?.httpStatusCode;
  let code = ERROR_CODES[name] ?? (status === undefined ? undefined : STATUS_CODES[status]) ?? 'Unavailable';
  // MultipartWriter's part limit (partSize × 10000) surfaces as a plain Error.
  if (/^Exceeded \d+ parts/.test(e.message ?? '')) code = 'QuotaExceeded';
  return new StorageError(code, `${what}: ${name}${e.message ? `: ${e.message}` : ''}`, { cause: err });
}

/** S3's error code (`Code` in the body, else the SDK's name for it). */
function s3ErrorName(err: unknown): string {
  const e = err as { name?: string; Code?: string } | undefined;
  return e?.Code ?? e?.name ?? 'Error';
}

/**
 * A 403 with no error body (HEAD has none): S3 may be refusing this key, or
 * the server's credentials. Only a request with a body can tell.
 */
function isBodiless403(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  // The SDK names such an error after the status ('Forbidden') or 'Unknown', never after an S3 code.
  const name = s3ErrorName(err);
  return e?.$metadata?.httpStatusCode === 403 && e.Code === undefined && (name === 'Forbidden' || !(name in ERROR_CODES));
}

/** True when S3 refused one of our If-Match conditions (the object changed), also inside a StorageError. */
function isPreconditionFailed(err: unknown): boolean {
  for (let e = err as { name?: string; Code?: string; cause?: unknown; $metadata?: { httpStatusCode?: number } } | undefined; e; e = e.cause as typeof e) {
    if (e.name === 'PreconditionFailed' || e.Code === 'PreconditionFailed' || e.$metadata?.httpStatusCode === 412) return true;
    if (!(e instanceof StorageError)) return false;
  }
  return false;
}

function checkKey(key: string): string {
  if (Buffer.byteLength(key) > MAX_PATH_BYTES) throw new StorageError('InvalidName', 'key longer than 1024 bytes');
  return key;
}

/**
 * A listing page's keys and prefixes as stored, when the store URL-encoded
 * them (S3 and MinIO encode a space as '+'). A store that ignored the
 * request says no EncodingType, and its names are taken as they came.
 */
function decodeNames(page: ListObjectsV2CommandOutput): ListObjectsV2CommandOutput {
  for (const o of page.Contents ?? []) o.Key = decodeName(o.Key, page.EncodingType);
  for (const p of page.CommonPrefixes ?? []) p.Prefix = decodeName(p.Prefix, page.EncodingType);
  page.Prefix = decodeName(page.Prefix, page.EncodingType);
  return page;
}

/** A key or prefix from a listing, as stored: URL-decoded when the store says it encoded it. */
function decodeName(name: string | undefined, encoding: string | undefined): string | undefined {
  return name === undefined || encoding !== 'url' ? name : decodeURIComponent(name.replace(/\+/g, ' '));
}

/** Empty listing pages in a row that say there is more, before a listing is given up. */
const MAX_EMPTY_PAGES = 100;

/**
 * Follows the pages of one listing. A store (or a gateway before it) that
 * says there is more but gives no token, gives a token it gave before, or
 * sends again a page it sent (under a new token) would end a listing early
 * (a 226 for part of it, a rename of part of a directory) or never:
 * Unavailable (451). A page is known by its first entry, which a listing
 * names once; one with none is allowed, a long run of them is not.
 */
class Pages {
  readonly #seen = new Set<string>();
  /** Empty pages in a row: S3 may send one, never a run of them that goes on. */
  #empty = 0;

  /** The token of the page after one that says whether it is `truncated` and starts with `first`; undefined after the last. */
  next(truncated: boolean | undefined, token: string | undefined, first: string | undefined): string | undefined {
    if (first !== undefined) this.#once(`page\n${first}`, 'the storage sent a listing page twice');
    this.#empty = first === undefined ? this.#empty + 1 : 0;
    if (!truncated) return undefined;
    if (this.#empty > MAX_EMPTY_PAGES) throw new StorageError('Unavailable', `the storage sent ${this.#empty} empty listing pages in a row`);
    if (!token) throw new StorageError('Unavailable', 'the storage said a listing goes on, and gave no token for the rest');
    this.#once(`token\n${token}`, 'the storage gave a listing token twice');
    return token;
  }

  /** The next page of a ListObjectsV2 listing. */
  after(page: ListObjectsV2CommandOutput): string | undefined {
    const first = page.Contents?.[0]?.Key ?? page.CommonPrefixes?.[0]?.Prefix;
    return this.next(page.IsTruncated, page.NextContinuationToken, first);
  }

  #once(what: string, refusal: string): void {
    if (this.#seen.has(what)) throw new StorageError('Unavailable', refusal);
    this.#seen.add(what);
  }
}

/**
 * The body of a GET, once its answer is known to be the bytes asked for:
 * `from` to `to` (exclusive) of the version `etag` of an object of `size`
 * bytes. A cache or store that ignores the Range (a 200 with the whole
 * object; RFC 9110 allows it), starts elsewhere, gives another length, or
 * another version (a store that ignores If-Match) is Unavailable (451),
 * never bytes a client is told are the file. The body's own length is
 * checked by its reader (ObjectStream, keepPrefix, hash).
 */
function checkedBody(out: GetObjectCommandOutput, want: { from: number; to: number; size?: number; etag?: string }): Readable {
  const wrong = (what: string): never => {
    (out.Body as Readable | undefined)?.destroy();
    throw new StorageError('Unavailable', `the storage answered ${what}`);
  };
  // A store that ignores If-Match answers with the other version's ETag, or with none.
  if (want.etag !== undefined && out.ETag !== want.etag) wrong('another version of the object');
  if (out.ContentLength !== undefined && out.ContentLength !== want.to - want.from) wrong(`${out.ContentLength} bytes where ${want.to - want.from} were asked for`);
  const range = out.ContentRange === undefined ? undefined : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(out.ContentRange);
  if (range) {
    const [, first, last, total] = range.map(Number);
    if (first !== want.from || last !== want.to - 1 || (want.size !== undefined && total !== undefined && !Number.isNaN(total) && total !== want.size)) {
      wrong(`the range ${out.ContentRange}`);
    }
  } else if (out.ContentRange !== undefined) {
    wrong(`an unreadable range, ${out.ContentRange}`);
  } else if (want.from !== 0 || (want.size !== undefined && want.to !== want.size)) {
    wrong('the whole object where a part was asked for');
  }
  return out.Body as Readable;
}

function pageHasKeys(page: ListObjectsV2CommandOutput): boolean {
  return (page.KeyCount ?? 0) > 0 || (page.Contents?.length ?? 0) > 0 || (page.CommonPrefixes?.length ?? 0) > 0;
}

/**
 * The names of the subdirectories on a delimited listing page of `prefix`,
 * as stored; undefined if a name may have been altered on its way: XML 1.0
 * cannot carry most control characters (a store may send U+FFFD instead),
 * and the SDK's parser turns a CR into LF.
 */
function subdirectoryNames(page: ListObjectsV2CommandOutput, prefix: string): Set<string> | undefined {
  const names = (page.CommonPrefixes ?? []).map((p) => (p.Prefix ?? '').slice(prefix.length, -1));
  return names.some((name) => name.includes('\uFFFD') || CONTROL_CHARACTERS.test(name)) ? undefined : new Set(names);
}

/** What XML 1.0 cannot carry as it is: controls (CR, LF and tab are altered by parsers) and U+FFFE, U+FFFF. */
const XML_UNSAFE = /[\u0000-\u001f\ufffe\uffff]/;

/** C0 controls and DEL: names holding one are checked by a listing of their own. */
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

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

/** A copy a directory rename made: its ETag, and its source's ETag then (`of`; absent in records of earlier versions). */
interface RecordedCopy {
  etag: string;
  of?: string;
}

/** An unfinished directory rename found in its target: the copies its last run recorded, if it could, and the originals it left. */
interface Resumed {
  copies?: ReadonlyMap<string, RecordedCopy>;
  left?: ReadonlySet<string>;
}

/**
 * A rename journal: the source prefix; the copies a resumed run could not
 * tell by their ETag alone (a part-by-part copy's ETag is not its source's,
 * and a source that changed after it was copied is no longer that of its
 * copy), by target key; and those changed sources (`left`).
 */
function journalBody(src: string, dst: string, copies: ReadonlyMap<string, RecordedCopy>, left: ReadonlySet<string>): string {
  const recorded = [...copies].filter(([target, copy]) => bareEtag(copy.etag) !== bareEtag(copy.of) || left.has(src + target.slice(dst.length)));
  return JSON.stringify({ from: src, copies: Object.fromEntries(recorded.map(([key, copy]) => [key, [copy.etag, copy.of]])), left: [...left] });
}

/** An ETag without its quotes (stores and SDKs differ in whether they keep them). */
function bareEtag(etag: string | undefined): string | undefined {
  return etag?.replaceAll('"', '');
}

/**
 * Reads a rename journal (journalBody()); also the forms of earlier versions:
 * copies as ETags alone, or the source prefix as plain text.
 */
function parseJournal(text: string): Resumed & { from: string } {
  try {
    const record = JSON.parse(text) as { from?: unknown; copies?: Record<string, string | [string, string?]>; left?: string[] };
    if (typeof record.from !== 'string') return { from: text };
    const copies = record.copies && Object.entries(record.copies).map(([key, copy]): [string, RecordedCopy] => [key, typeof copy === 'string' ? { etag: copy } : { etag: copy[0], of: copy[1] }]);
    return { from: record.from, copies: copies && new Map(copies), left: new Set(record.left) };
  } catch {
    // The plain form.
  }
  return { from: text };
}

/**
 * What a resumed rename finds at a target key: 'copied' if it holds the
 * source object already (the same ETag, or the recorded copy of the source
 * as it still is); 'free' if it may be written over: anything, when no record
 * was written (`recorded` is false then); the recorded copy of a source the
 * last run left in place because it had changed (`wasLeft`), or of a source
 * an earlier version's record does not name. Else 'other': a file stored
 * there since, or the copy of a source whose original a finished run deleted
 * (a new file of that name since), which stays.
 */
function targetState(
  etag: string | undefined,
  targetEtag: string | undefined,
  recorded: RecordedCopy | false | undefined,
  wasLeft: boolean,
): 'copied' | 'free' | 'other' {
  if (bareEtag(targetEtag) === bareEtag(etag)) return 'copied';
  if (recorded === false) return 'free';
  if (recorded === undefined || bareEtag(recorded.etag) !== bareEtag(targetEtag)) return 'other';
  if (recorded.of === undefined || wasLeft) return 'free';
  return bareEtag(recorded.of) === bareEtag(etag) ? 'copied' : 'other';
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

/** A HEAD of an object, which S3 answers with its size. */
type Head = HeadObjectCommandOutput & { ContentLength: number };

/** Most times an object read resumes in a row without a byte received in between. */
const MAX_READ_RESUMES = 3;

interface ObjectStreamOptions {
  /** Starts a GET of [from, end) of the version that was validated. */
  fetch(from: number, signal: AbortSignal): Promise<Readable>;
  start: number;
  end: number;
  signal: AbortSignal | undefined;
  classify(err: unknown): StorageError;
  onResume(at: number, err: unknown): void;
}

/**
 * The bytes [start, end) of one object version, fetched on the first read.
 * While the consumer does not read, the GET's body is paused, and S3's
 * socket timeout may end it: that is the consumer's pause, not a failure, so
 * the next read resumes with a ranged GET from the byte where it stopped. A
 * body that stalls or breaks while bytes are wanted is resumed the same way,
 * at most MAX_READ_RESUMES times in a row without progress. A GET that S3
 * refuses (the object changed or went away) ends the stream with that error.
 */
class ObjectStream extends Readable {
  readonly #o: ObjectStreamOptions;
  readonly #cancel = new AbortController();
  #position: number;
  #body: Readable | undefined;
  #opening = false;
  /** The consumer asked for bytes and has not said stop since. */
  #wanting = false;
  #failures = 0;
  readonly #onAbort = (): void => void this.destroy(abortError(this.#o.signal));

  constructor(options: ObjectStreamOptions) {
    super();
    this.#o = options;
    this.#position = options.start;
    options.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  override _read(): void {
    this.#wanting = true;
    if (this.#body) this.#body.resume();
    else if (!this.#opening) void this.#open();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#o.signal?.removeEventListener('abort', this.#onAbort);
    this.#cancel.abort();
    this.#body?.destroy();
    this.#body = undefined;
    callback(err);
  }

  async #open(): Promise<void> {
    if (this.#position >= this.#o.end) {
      this.push(null);
      return;
    }
    this.#opening = true;
    let body: Readable;
    try {
      body = await this.#o.fetch(this.#position, this.#cancel.signal);
    } catch (err) {
      this.#opening = false;
      if (this.destroyed) return;
      // The SDK has retried the request itself; a refused one (412, 404, 403) is final, and so is an
      // answer that is not what was asked for (a StorageError of fetch's own checks): asking again would
      // only get it again.
      const error = this.#o.classify(err);
      const retriable = error.code === 'Unavailable' && !(err instanceof StorageError) && !isPreconditionFailed(err);
      if (retriable && !this.#o.signal?.aborted) this.#interrupted(err);
      else this.destroy(error);
      return;
    }
    this.#opening = false;
    if (this.destroyed) {
      body.destroy();
      return;
    }
    this.#attach(body);
  }

  #attach(body: Readable): void {
    this.#body = body;
    let over = false;
    /** Leaves the body: once, and true the first time. */
    const detach = (): boolean => {
      if (over) return false;
      over = true;
      body.removeAllListeners('data');
      if (this.#body === body) this.#body = undefined;
      body.destroy();
      return true;
    };
    const finish = (err: unknown): void => {
      if (!detach() || this.destroyed) return;
      if (err === undefined && this.#position >= this.#o.end) this.push(null);
      else this.#interrupted(err ?? new Error('the object body ended early'));
    };
    body.on('data', (chunk: Buffer) => {
      this.#position += chunk.length;
      if (this.#position > this.#o.end) {
        // More bytes than the object has (a body without a length that goes on): nothing of it is the file.
        if (detach()) this.destroy(new StorageError('Unavailable', 'the storage sent more bytes than the object has'));
        return;
      }
      this.#failures = 0;
      if (!this.push(chunk)) {
        this.#wanting = false;
        body.pause();
      }
    });
    body.on('error', () => undefined); // an error after finish() has nobody else to hear it
    body.once('end', () => finish(undefined));
    body.once('error', (err) => finish(err));
    body.once('close', () => finish(new Error('the object body was closed')));
  }

  /** The body is gone with bytes left: fetch the rest now if they are wanted, else on the next read. */
  #interrupted(err: unknown): void {
    if (this.#wanting && ++this.#failures > MAX_READ_RESUMES) {
      this.destroy(this.#o.classify(err));
      return;
    }
    this.#o.onResume(this.#position, err);
    if (this.#wanting) void this.#open();
  }
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

  #hex: string | undefined;

  /** The digest, once the body has ended; may be asked for more than once. */
  hex(): string {
    this.#hex ??= this.#digest.hex();
    return this.#hex;
  }
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
