import { randomUUID } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { copyFile, lstat, mkdir, open, opendir, realpath, rename, rmdir, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { LocalStorageConfig } from '../config/index.js';
import { RESERVED_PREFIX } from '../paths.js';
import {
  baseName,
  joinPath,
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

/** In-progress uploads live here, on the same file system as their targets, so the final rename is atomic. */
const PARTIAL_DIR = `${RESERVED_PREFIX}partial`;
const DEFAULT_PAGE_SIZE = 1000;

/** Optional LocalStorage settings; the defaults suit production. */
export interface LocalStorageOptions {
  /** Entries per listing page; tests lower it to exercise paging. */
  pageSize?: number;
}

/**
 * A Storage on a local directory. Symbolic links are never followed: they are
 * left out of listings, and a path that runs through one is NotFound, so no
 * link can lead a client outside the root.
 */
export class LocalStorage implements Storage {
  readonly capabilities: StorageCapabilities = { resumeUpload: true };
  private readonly pageSize: number;
  private realRoot: Promise<string> | undefined;

  constructor(
    private readonly config: LocalStorageConfig,
    options: LocalStorageOptions = {},
  ) {
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  }

  async stat(path: StoragePath): Promise<FileInfo> {
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return toInfo(baseName(path), found.stats);
  }

  async *list(path: StoragePath, signal?: AbortSignal): AsyncIterable<FileInfo[]> {
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such directory: ${path}`);
    if (!found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    const dir = await fsCall(`list ${path}`, () => opendir(found.full, { bufferSize: 64 }));
    try {
      let names: string[] = [];
      for await (const entry of dir) {
        signal?.throwIfAborted();
        if (entry.name.startsWith(RESERVED_PREFIX)) continue;
        names.push(entry.name);
        if (names.length >= this.pageSize) {
          yield await this.entries(found.full, names);
          names = [];
        }
      }
      yield await this.entries(found.full, names);
    } catch (err) {
      throw classify(err, `list ${path}`);
    } finally {
      // for-await closes the Dir when it completes or throws, but not when our consumer stops early.
      await dir.close().catch(() => undefined);
    }
  }

  async read(path: StoragePath, options: ReadOptions = {}): Promise<Readable> {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StorageError('InvalidRange', `bad offset ${start}`);
    const full = await this.resolve(path);
    // O_NOFOLLOW: the last component must not be a symbolic link either.
    const handle = await fsCall(`read ${path}`, () => open(full, constants.O_RDONLY | constants.O_NOFOLLOW));
    try {
      const stats = await handle.stat();
      if (stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
      if (start > stats.size) throw new StorageError('InvalidRange', `offset ${start} is beyond the end of ${path}`);
      return handle.createReadStream({ start, signal: options.signal });
    } catch (err) {
      await handle.close();
      throw classify(err, `read ${path}`);
    }
  }

  // Takes ownership of body. An aborted write rejects with StorageError('Unavailable', 'write aborted').
  async write(path: StoragePath, body: Readable, options: WriteOptions = {}): Promise<WriteResult> {
    const { signal } = options;
    const onAbort = (): void => void body.destroy(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    let temp: string | undefined;
    try {
      if (signal?.aborted) throw abortError(signal);
      const { full, offset } = await this.prepareWrite(path, options);
      temp = await this.tempPath();
      if (offset > 0) {
        await copyFile(full, temp, constants.COPYFILE_FICLONE);
        await truncate(temp, offset);
      }
      const size = await writeBody(temp, offset, body);
      await rename(temp, full);
      return { size };
    } catch (err) {
      body.destroy();
      if (temp) await unlink(temp).catch(() => undefined);
      if (signal?.aborted) throw new StorageError('Unavailable', 'write aborted', { cause: signal.reason });
      throw classify(err, `write ${path}`);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async mkdir(path: StoragePath): Promise<void> {
    if (path === '') throw new StorageError('Exists', 'the root exists');
    await this.requireDirectory(parentPath(path));
    const full = await this.resolve(path);
    await fsCall(`mkdir ${path}`, () => mkdir(full));
  }

  async mkdirAll(path: StoragePath): Promise<void> {
    let level = '';
    for (const segment of path === '' ? [] : path.split('/')) {
      level = joinPath(level, segment);
      const found = await this.lookup(level);
      if (found && !found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${level}`);
      if (!found) {
        const full = await this.resolve(level);
        await mkdir(full).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw classify(err, `mkdir ${level}`);
        });
      }
    }
  }

  async rmdir(path: StoragePath): Promise<void> {
    if (path === '') throw new StorageError('Denied', 'cannot remove the root directory');
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such directory: ${path}`);
    if (!found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    await fsCall(`rmdir ${path}`, () => rmdir(found.full));
  }

  async delete(path: StoragePath): Promise<void> {
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such file: ${path}`);
    if (found.stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    await fsCall(`delete ${path}`, () => unlink(found.full));
  }

  async rename(from: StoragePath, to: StoragePath): Promise<void> {
    if (from === '') throw new StorageError('Denied', 'cannot rename the root directory');
    if (from === to || to.startsWith(`${from}/`)) {
      throw new StorageError('InvalidName', `cannot move ${from} onto or into itself`);
    }
    const source = await this.lookup(from);
    if (!source) throw new StorageError('NotFound', `no such file or directory: ${from}`);
    await this.requireDirectory(parentPath(to));
    const target = await this.lookup(to);
    // Same rule as S3: only a file may replace a file.
    if (target && (target.stats.isDirectory() || source.stats.isDirectory())) {
      throw new StorageError('Exists', `already exists: ${to}`);
    }
    const full = await this.resolve(to);
    await fsCall(`rename ${from}`, () => rename(source.full, full));
  }

  async close(): Promise<void> {}

  /** The root with symbolic links resolved, so resolve() can compare real paths. */
  private root(): Promise<string> {
    // The data directory is created on first use, so `npm start` works in a fresh clone.
    this.realRoot ??= fsCall('open data directory', async () => {
      await mkdir(this.config.dataDir, { recursive: true });
      return realpath(this.config.dataDir);
    });
    return this.realRoot;
  }

  /**
   * The absolute path of a storage path whose parent chain holds no symbolic
   * link (realpath of the parent must be its plain join); NotFound otherwise.
   */
  private async resolve(path: StoragePath): Promise<string> {
    const root = await this.root();
    if (path === '') return root;
    const parent = parentPath(path);
    const expected = join(root, parent);
    const real = await realpath(expected).catch((err: unknown) => {
      throw classify(err, `resolve ${path}`);
    });
    if (real !== expected) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return join(root, path);
  }

  /** lstat of a path, or undefined when it does not exist, runs through a file, or is a symbolic link. */
  private async lookup(path: StoragePath): Promise<{ full: string; stats: Stats } | undefined> {
    let full: string;
    let stats: Stats;
    try {
      full = await this.resolve(path);
      stats = await lstat(full);
    } catch (err) {
      const error = classify(err, `stat ${path}`);
      if (error.code === 'NotFound' || error.code === 'NotADirectory') return undefined;
      throw error;
    }
    if (stats.isSymbolicLink()) return undefined;
    return { full, stats };
  }

  /** Resolves when path is a directory; NotFound otherwise (also when it is a file). */
  private async requireDirectory(path: StoragePath): Promise<void> {
    const found = await this.lookup(path);
    if (!found?.stats.isDirectory()) throw new StorageError('NotFound', `no such directory: ${path}`);
  }

  /** Checks the target and parent of a write; returns the target's path and the byte offset to keep. */
  private async prepareWrite(path: StoragePath, options: WriteOptions): Promise<{ full: string; offset: number }> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    await this.requireDirectory(parentPath(path));
    const found = await this.lookup(path);
    if (found?.stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const size = found?.stats.size ?? 0;
    const offset = options.append ? size : (options.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new StorageError('InvalidRange', `offset ${offset} is beyond the end of ${path} (${size} bytes)`);
    }
    return { full: found?.full ?? (await this.resolve(path)), offset };
  }

  private async tempPath(): Promise<string> {
    const dir = join(await this.root(), PARTIAL_DIR);
    await mkdir(dir, { recursive: true });
    return join(dir, randomUUID());
  }

  /** Reads entry metadata for one page; entries that vanished or are links are dropped. */
  private async entries(dir: string, names: string[]): Promise<FileInfo[]> {
    const infos = await Promise.all(
      names.map(async (name) => {
        const stats = await lstat(join(dir, name)).catch(() => undefined);
        if (!stats || !(stats.isFile() || stats.isDirectory())) return undefined;
        return toInfo(name, stats);
      }),
    );
    return infos.filter((info): info is FileInfo => info !== undefined);
  }
}

/** Writes body into file at offset, flushes it to disk, and returns the file's final size. */
async function writeBody(file: string, offset: number, body: Readable): Promise<number> {
  const handle = await open(file, offset > 0 ? 'r+' : 'wx', 0o644);
  try {
    let position = offset;
    for await (const chunk of body) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      let done = 0;
      while (done < buf.length) {
        const { bytesWritten } = await handle.write(buf, done, buf.length - done, position + done);
        done += bytesWritten;
      }
      position += buf.length;
    }
    // Without the fsync the rename could reach the disk before the data does.
    await handle.sync();
    return position;
  } finally {
    await handle.close();
  }
}

function toInfo(name: string, stats: Stats): FileInfo {
  const isDirectory = stats.isDirectory();
  return { name, isDirectory, size: isDirectory ? 0 : stats.size, mtime: stats.mtime };
}

async function fsCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classify(err, what);
  }
}

const ERRNO_CODES: Record<string, StorageErrorCode> = {
  ENOENT: 'NotFound',
  // O_NOFOLLOW on a symbolic link: links are invisible, so this is NotFound too.
  ELOOP: 'NotFound',
  EEXIST: 'Exists',
  ENOTEMPTY: 'NotEmpty',
  ENOTDIR: 'NotADirectory',
  EISDIR: 'IsADirectory',
  EACCES: 'Denied',
  EPERM: 'Denied',
  EROFS: 'Denied',
  ENAMETOOLONG: 'InvalidName',
  EINVAL: 'InvalidName',
  ENOSPC: 'QuotaExceeded',
  EDQUOT: 'QuotaExceeded',
  EFBIG: 'QuotaExceeded',
};

/** The only place errno codes are read; anything unknown (EIO, EMFILE, aborts) is Unavailable. */
function classify(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e.code && ERRNO_CODES[e.code]) || 'Unavailable';
  return new StorageError(code, `${what}: ${e.message ?? String(err)}`, { cause: err });
}

function abortError(signal: AbortSignal | undefined): Error {
  return Object.assign(new Error('aborted', { cause: signal?.reason }), { name: 'AbortError' });
}
