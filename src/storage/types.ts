import type { Readable } from 'node:stream';

/**
 * Storage paths: normalised POSIX paths relative to the storage root, with no
 * leading or trailing slash. The root itself is ''. They never contain '.', '..',
 * empty segments or NUL, and a backslash only inside a name that cannot lead a
 * Windows client elsewhere: src/paths.ts guarantees that before any driver sees one.
 */
export type StoragePath = string;

/** One directory entry or the result of a stat. */
export interface FileInfo {
  /** Base name (the last path segment); '' for the root. */
  name: string;
  isDirectory: boolean;
  /** Bytes; 0 for directories. */
  size: number;
  /** Last modification; for S3 prefixes without a `name/` marker, the epoch. */
  mtime: Date;
}

/** Why a storage call failed, in terms the protocol layer can answer. */
export type StorageErrorCode =
  | 'NotFound'
  | 'Exists'
  | 'NotEmpty'
  | 'NotADirectory'
  | 'IsADirectory'
  | 'Denied'
  | 'InvalidName'
  | 'InvalidRange'
  | 'QuotaExceeded'
  | 'Unavailable'
  /**
   * A write whose publishing request failed and whose outcome the storage
   * could not then learn (S3 did not answer the check either): the file may
   * or may not have been replaced.
   */
  | 'Unconfirmed'
  /**
   * The backend refused the server itself (S3: wrong credentials, a bad
   * signature, clock skew, an expired token): nothing about the client's
   * request is wrong, and only the administrator can fix it.
   */
  | 'BackendRefused'
  /** The backend cannot do this at all (e.g. setting a modification time on S3). */
  | 'Unsupported'
  /** Not now: an upload runs into the directory to rename, or the directory to upload into is being renamed. */
  | 'Busy';

/** The only error type drivers throw; `code` is stable, `cause` keeps the driver's error. */
export class StorageError extends Error {
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StorageError';
  }
}

export interface ListOptions {
  /**
   * Directory entries carry their real mtime (default true). On S3 that costs
   * a request per subdirectory; callers that show no dates pass false and
   * may get the epoch instead.
   */
  directoryTimes?: boolean;
}

export interface ReadOptions {
  /** Byte offset to start from (REST). */
  start?: number;
  signal?: AbortSignal;
}

export interface WriteOptions {
  /**
   * Keep the first `offset` bytes of the existing object and write the body after
   * them (REST + STOR). With `append`, the offset is the current size (APPE).
   */
  offset?: number;
  append?: boolean;
  /**
   * Publish only where nothing is stored: a file that appears at the path
   * during the write (another upload, another tool) fails the write
   * ('Unavailable') instead of being replaced. For a writer that may not
   * replace files (a drop box); an append or resume is always conditional.
   */
  createOnly?: boolean;
  signal?: AbortSignal;
  /** Recorded with the object where the driver can (who uploaded it, from where). */
  metadata?: Record<string, string>;
  /**
   * What an interrupted write (body error, abort, storage failure) leaves:
   * 'discard' (the default) keeps the previous object untouched; 'publish'
   * replaces it with everything received so far, so a client can resume with
   * REST + STOR. The write still rejects either way. Nothing received, nothing published.
   */
  onAbort?: AbortPolicy;
  /** Told the size of the file when onAbort 'publish' published what was received. */
  onPartial?: (size: number) => void;
  /**
   * Awaited once the body has ended, right before the publishing step
   * (PutObject, CompleteMultipartUpload, the final rename), so that the work
   * before it (the last part's upload, the fsync) overlaps whatever it waits
   * for (the upload commit rule). If it rejects, nothing is published and
   * the write rejects (onAbort 'publish' still publishes what was received).
   */
  beforePublish?: () => Promise<void>;
  /**
   * Return the object's SHA-256 (WriteResult.sha256) when every byte of it
   * passed through this write: none was kept by copying. A driver that hashes
   * its uploads anyway (S3) returns it unasked.
   */
  sha256?: boolean;
}

export type AbortPolicy = 'discard' | 'publish';

/** Algorithms of the HASH command (draft-bryan-ftp-hash), by their FTP names. */
export const HASH_ALGORITHMS = ['SHA-256', 'SHA-1', 'MD5', 'CRC32'] as const;
export type HashAlgorithm = (typeof HASH_ALGORITHMS)[number];

export interface HashResult {
  algorithm: HashAlgorithm;
  /** Lowercase hex. */
  hash: string;
  /** Bytes covered by the hash: the whole object. */
  size: number;
  /** True when the value came from what was stored at upload, without reading the object. */
  stored: boolean;
}

/** An opened read: the bytes from the requested offset, and how many there are. */
export interface OpenedRead {
  /**
   * The file's bytes from the offset on. A driver may fetch them lazily (on the
   * first read), so opening validates and the transfer starts only once a
   * reader is there.
   */
  stream: Readable;
  /** Bytes the stream yields: the file's size less the offset. */
  size: number;
}

export interface WriteResult {
  /** Size of the stored object after the write. */
  size: number;
  /** Lowercase hex; see WriteOptions.sha256. */
  sha256?: string;
}

export interface StorageCapabilities {
  /** APPE and REST+STOR are offered (FEAT, HELP) only when true. */
  resumeUpload: boolean;
  /** MFMT and `MDTM <time> <path>` are offered (FEAT, HELP) only when true; see Storage.setModificationTime. */
  setModificationTime: boolean;
}

/**
 * A storage backend. Every method either succeeds or throws StorageError.
 * Writes are atomic: the object becomes visible (or replaced) only when the
 * returned promise resolves; a failed or aborted write leaves the previous
 * object, if any, untouched and nothing partial behind (unless the write asked
 * for onAbort: 'publish'). The `signal` arguments end with the session: a
 * driver stops at the next request once it is aborted, and a write whose
 * signal is aborted before its publishing step (PutObject,
 * CompleteMultipartUpload, the final rename) publishes nothing.
 */
export interface Storage {
  readonly capabilities: StorageCapabilities;
  stat(path: StoragePath, signal?: AbortSignal): Promise<FileInfo>;
  /**
   * The entries of a directory, page by page as the backend yields them.
   * Throws NotFound (no such directory) or NotADirectory before the first page.
   */
  list(path: StoragePath, signal?: AbortSignal, options?: ListOptions): AsyncIterable<FileInfo[]>;
  /** Validates and opens a file for reading: NotFound, IsADirectory, InvalidRange (offset past the end). */
  read(path: StoragePath, options?: ReadOptions): Promise<OpenedRead>;
  write(path: StoragePath, body: Readable, options?: WriteOptions): Promise<WriteResult>;
  /** Creates one directory; its parent must exist. */
  mkdir(path: StoragePath, signal?: AbortSignal): Promise<void>;
  /** Ensures a directory and its parents exist (user homes). */
  mkdirAll(path: StoragePath, signal?: AbortSignal): Promise<void>;
  /** Removes an empty directory. */
  rmdir(path: StoragePath, signal?: AbortSignal): Promise<void>;
  /** Removes one file. */
  delete(path: StoragePath, signal?: AbortSignal): Promise<void>;
  /**
   * Moves a file, or a directory and everything under it. A directory rename
   * that failed midway may be run again with the same arguments to finish it.
   */
  rename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void>;
  /**
   * The hash of a whole file: from the value stored at upload when there is
   * one for this algorithm and it still matches the file, else by reading it.
   * NotFound, IsADirectory as for read.
   */
  hash(path: StoragePath, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<HashResult>;
  /**
   * Removes what a crashed server left under this storage's root: temp files
   * of uploads (local) or multipart uploads (S3) started more than
   * `olderThanMs` ago, except those of writes this instance is running. The
   * age must exceed the longest transfer any other instance sharing the root
   * may still be making. Resolves with how many were removed.
   */
  sweep(olderThanMs: number, signal?: AbortSignal): Promise<{ removed: number }>;
  /**
   * Sets a file's modification time (MFMT). Only drivers whose capabilities
   * say setModificationTime implement it; others throw Unsupported.
   */
  setModificationTime(path: StoragePath, mtime: Date, signal?: AbortSignal): Promise<void>;
  /** Releases clients and sockets. */
  close(): Promise<void>;
  /** Resolves when the backend answers and the root is usable (readiness, check-config); else StorageError. */
  ping(): Promise<void>;
}

/** Joins a directory and a name into a storage path. */
export function joinPath(dir: StoragePath, name: string): StoragePath {
  return dir === '' ? name : `${dir}/${name}`;
}

/** The parent of a storage path ('' for top-level names and the root). */
export function parentPath(path: StoragePath): StoragePath {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

/** The last segment of a storage path. */
export function baseName(path: StoragePath): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
