import { StorageError, type StoragePath } from './storage/types.js';

/** S3 allows keys of at most 1024 bytes; the same bound holds on the local driver. */
export const MAX_PATH_BYTES = 1024;
/** Most file systems refuse longer names. */
export const MAX_NAME_BYTES = 255;
/** Names with this prefix belong to the server (in-progress uploads). */
export const RESERVED_PREFIX = '.s3ftp-';

/**
 * Resolves an FTP path argument against the working directory into a normalised
 * absolute FTP path ('/' or '/a/b'). '..' stops at '/', so no argument can leave
 * the user's root. Throws StorageError('InvalidName') for names no driver may see.
 */
export function resolveFtpPath(cwd: string, arg: string): string {
  if (arg.includes('\0') || arg.includes('\\')) {
    throw new StorageError('InvalidName', 'name contains a forbidden character');
  }
  const segments: string[] = [];
  const input = arg.startsWith('/') ? arg : `${cwd}/${arg}`;
  for (const segment of input.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      segments.pop();
      continue;
    }
    if (Buffer.byteLength(segment) > MAX_NAME_BYTES) {
      throw new StorageError('InvalidName', 'name too long');
    }
    if (segment.startsWith(RESERVED_PREFIX)) {
      throw new StorageError('InvalidName', 'name is reserved');
    }
    segments.push(segment);
  }
  return `/${segments.join('/')}`;
}

/**
 * Maps a normalised FTP path (from resolveFtpPath) under a user's home to the
 * storage path the drivers take.
 */
export function toStoragePath(home: StoragePath, ftpPath: string): StoragePath {
  const rel = ftpPath.slice(1);
  const path = home === '' ? rel : rel === '' ? home : `${home}/${rel}`;
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new StorageError('InvalidName', 'path too long');
  }
  return path;
}

/** Normalises a configured home ('/', '/alice/', 'alice') into a storage path. */
export function homeToStoragePath(home: string): StoragePath {
  return toStoragePath('', resolveFtpPath('/', home));
}
