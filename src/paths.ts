import { decodeArgument, type LegacyEncoding } from './encoding.js';
import { StorageError, type StoragePath } from './storage/types.js';

/** S3 allows keys of at most 1024 bytes; the same bound holds on the local driver. */
export const MAX_PATH_BYTES = 1024;
/** Most file systems refuse longer names. */
export const MAX_NAME_BYTES = 255;
/** S3's rules for bucket names (the common subset: lowercase, digits, dots, hyphens). */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** Names with this prefix belong to the server (in-progress uploads). */
export const RESERVED_PREFIX = '.s3ftp-';

/**
 * Resolves an FTP path argument against the working directory into a normalised
 * absolute FTP path ('/' or '/a/b'). '..' stops at '/', so no argument can leave
 * the user's root. Throws StorageError('InvalidName') for names no driver may see,
 * and for bytes that are not UTF-8 unless `legacyEncoding` says how to read them.
 */
export function resolveFtpPath(cwd: string, raw: string, options: { legacyEncoding?: LegacyEncoding } = {}): string {
  // Bytes that were not UTF-8 (escaped by the line reader): decoded from the client's code page
  // when one is configured, else refused, never guessed (two names must not become one key).
  const arg = decodeArgument(raw, options.legacyEncoding);
  if (arg === undefined) {
    throw new StorageError('InvalidName', 'name is not valid UTF-8 (send UTF-8, or ask for FTP_LEGACY_ENCODING)');
  }
  // NUL, and the CR a client sends as CR NUL: no listing line could show the name.
  if (/[\0\r\n]/.test(arg)) {
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
    if (segment.includes('\\') && leavesWindowsDirectory(segment)) {
      throw new StorageError('InvalidName', 'a backslash name that leaves the directory on Windows');
    }
    segments.push(segment);
  }
  return `/${segments.join('/')}`;
}

/**
 * A backslash is an ordinary character in a name (S3 keys and Linux file
 * names hold it; rclone's encoding tests send it). Only a name that a Windows
 * client would take as a path out of its download directory is refused: a
 * '..' piece, a leading backslash, or a drive (`..\\x`, `\\x`, `C:\\x`), since
 * mget writes each name it is given.
 */
function leavesWindowsDirectory(name: string): boolean {
  const pieces = name.split('\\');
  return pieces[0] === '' || /^[A-Za-z]:/.test(name) || pieces.some((p) => p.trim() === '..');
}

/** Normalises a configured directory ('/', '/alice/', 'alice') into a storage path. */
export function homeToStoragePath(home: string): StoragePath {
  const path = resolveFtpPath('/', home).slice(1);
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw new StorageError('InvalidName', 'path too long');
  return path;
}
