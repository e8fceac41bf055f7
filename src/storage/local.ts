import { randomUUID } from 'node:crypto';
import { constants, existsSync, type Stats } from 'node:fs';
import { access, copyFile, lstat, lutimes, mkdir, open, opendir, readdir, realpath, rename, rm, rmdir, truncate, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { LocalStorageConfig } from '../config/index.js';
import { decodeLine, hasInvalidBytes } from '../encoding.js';
import { RESERVED_PREFIX } from '../paths.js';
import { createDigest, digestStream, type Digest } from './digest.js';
import { RunningWrites } from './running-writes.js';
import {
  baseName,
  joinPath,
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

/** In-progress uploads live here, on the same file system as their targets, so the final rename is atomic. */
const PARTIAL_DIR = `${RESERVED_PREFIX}partial`;
/**
 * Each directory keeps what is known about its files (uploader, client address) in
 * `.s3ftp-meta/<name>.json`: extended attributes are not portable, and a
 * sidecar in the same directory moves with a directory rename for free.
 */
const META_DIR = `${RESERVED_PREFIX}meta`;
/** What an APPE or REST + STOR builds on: a version of the file (what tells one from the next), or no file. */
type Base = Pick<Stats, 'ino' | 'size' | 'mtimeMs'> | 'absent';
const DEFAULT_PAGE_SIZE = 1000;
/** Bytes an upload gathers before it writes them (one writev); bytes a download reads at once. */
const WRITE_BATCH_BYTES = 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/** An upload starts flushing what it wrote to the disk every this many bytes (see writeBody). */
const SYNC_AHEAD_BYTES = 64 * 1024 * 1024;
/**
 * Linux: a path through /proc/self/fd/N starts at the directory open as N,
 * which is what openat(2) does and Node does not offer. Elsewhere the driver
 * falls back to checking real paths, which a concurrent rename can outrun.
 */
const FD_PATHS = process.platform === 'linux' && existsSync('/proc/self/fd');

/** Optional LocalStorage settings; the defaults suit production. */
export interface LocalStorageOptions {
  /** Entries per listing page; tests lower it to exercise paging. */
  pageSize?: number;
}

/** A sidecar's content. It describes the file only while size, mtime and inode still match. */
interface Sidecar {
  metadata?: Record<string, string>;
  size: number;
  mtimeMs: number;
  ino: number;
}

/**
 * A Storage on a local directory. Symbolic links are never followed: they are
 * left out of listings, and a path that runs through one is NotFound, so no
 * link can lead a client outside the root.
 */
export class LocalStorage implements Storage {
  readonly capabilities: StorageCapabilities = { resumeUpload: true, setModificationTime: true };
  private readonly pageSize: number;
  private realRoot: Promise<string> | undefined;
  /** Temp files of writes in progress here: a sweep leaves them alone, whatever their age. */
  private readonly temps = new Set<string>();
  /** The temp directory, once made and checked (see tempFile). */
  private partialDir: Promise<string> | undefined;
  /** The last step queued for each path (see #onePerPath). */
  readonly #steps = new Map<StoragePath, Promise<void>>();
  /** Paths being written: a directory with a write running into it is not empty. */
  readonly #writes = new RunningWrites();

  constructor(
    private readonly config: LocalStorageConfig,
    options: LocalStorageOptions = {},
  ) {
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  }

  async stat(path: StoragePath, signal?: AbortSignal): Promise<FileInfo> {
    throwIfAborted(signal);
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such file or directory: ${path}`);
    return toInfo(baseName(path), found.stats);
  }

  async *list(path: StoragePath, signal?: AbortSignal): AsyncIterable<FileInfo[]> {
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such directory: ${path}`);
    if (!found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    // The listing reads the directory it opened, reached without following any link.
    const held = await this.openAt(path, constants.O_RDONLY | constants.O_DIRECTORY);
    const base = FD_PATHS ? fdPath(held) : found.full;
    // Names as bytes: one that is not UTF-8 would come back with U+FFFD in it, naming another file or none.
    // (Node takes 'buffer' here as for readdir; @types/node's OpenDirOptions does not list it.)
    const dir = await fsCall(`list ${path}`, () => opendir(base, { bufferSize: 64, encoding: 'buffer' as BufferEncoding })).catch(async (err: unknown) => {
      await held.close();
      throw err;
    });
    try {
      let names: string[] = [];
      for await (const entry of dir) {
        signal?.throwIfAborted();
        const name = decodeLine(entry.name as unknown as Buffer);
        if (name.startsWith(RESERVED_PREFIX) || hasInvalidBytes(name)) continue;
        names.push(name);
        if (names.length >= this.pageSize) {
          yield await this.entries(base, names);
          names = [];
        }
      }
      yield await this.entries(base, names);
    } catch (err) {
      throw classify(err, `list ${path}`);
    } finally {
      // for-await closes the Dir when it completes or throws, but not when our consumer stops early.
      await dir.close().catch(() => undefined);
      await held.close();
    }
  }

  async read(path: StoragePath, options: ReadOptions = {}): Promise<OpenedRead> {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StorageError('InvalidRange', `bad offset ${start}`);
    const handle = await this.openAt(path, constants.O_RDONLY);
    try {
      const stats = await handle.stat();
      if (stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
      if (!stats.isFile()) throw new StorageError('NotFound', `no such file: ${path}`);
      if (start > stats.size) throw new StorageError('InvalidRange', `offset ${start} is beyond the end of ${path}`);
      return { stream: handle.createReadStream({ start, signal: options.signal, highWaterMark: READ_CHUNK_BYTES }), size: stats.size - start };
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
    let full: string | undefined;
    /** The file an append or resume builds on: published over only if it is still that, unchanged. */
    let base: Base | undefined;
    const received = { bytes: 0 };
    let ended: (() => void) | undefined;
    try {
      if (signal?.aborted) throw abortError(signal);
      ended = this.#writes.start(path);
      const target = await this.prepareWrite(path, options);
      full = target.full;
      const { offset } = target;
      base = target.base;
      let handle: FileHandle;
      ({ temp, handle } = await this.tempFile(async (file) => {
        this.temps.add(file);
        if (offset === 0) return open(file, 'wx', 0o644);
        // Copied from the file as opened now, beneath the root, not from whatever the path names later.
        const source = await this.openAt(path, constants.O_RDONLY);
        try {
          // Copied through a path that opens it again (blocking): it must be the regular file looked at.
          if (!(await source.stat()).isFile()) throw new StorageError('Unavailable', `${path} changed during the upload`);
          await copyFile(FD_PATHS ? fdPath(source) : target.full, file, constants.COPYFILE_FICLONE);
        } finally {
          await source.close();
        }
        await truncate(file, offset);
        return open(file, 'r+');
      }));
      // Hashed only when asked: on the main thread it halves the upload rate.
      const digest = options.sha256 && offset === 0 ? createDigest('SHA-256') : undefined;
      const size = await writeBody(handle, offset, body, received, digest);
      // The fsync above ran while the commit rule decided; the sidecar and the rename publish.
      await options.beforePublish?.();
      await this.install(temp, path, { metadata: options.metadata }, signal, base);
      return { size, sha256: digest?.hex() };
    } catch (err) {
      body.destroy();
      if (temp && full && options.onAbort === 'publish' && received.bytes > 0) {
        // keepPartialUploads: what was received replaces the file; the write still fails.
        const size = await this.install(temp, path, { metadata: options.metadata }, undefined, base).catch(() => undefined);
        if (size !== undefined) options.onPartial?.(size);
      }
      if (temp) await unlink(temp).catch(() => undefined);
      if (temp) this.temps.delete(temp);
      if (signal?.aborted) throw new StorageError('Unavailable', 'write aborted', { cause: signal.reason });
      throw classify(err, `write ${path}`);
    } finally {
      ended?.();
      if (temp) this.temps.delete(temp);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async hash(path: StoragePath, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<HashResult> {
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such file: ${path}`);
    if (found.stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const { stream } = await this.read(path, { signal });
    try {
      const { hash, size } = await digestStream(stream, algorithm, signal);
      return { algorithm, hash, size, stored: false };
    } catch (err) {
      stream.destroy();
      throw classify(err, `hash ${path}`);
    }
  }

  async mkdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '') throw new StorageError('Exists', 'the root exists');
    await this.requireDirectory(parentPath(path));
    throwIfAborted(signal);
    await this.atPath(path, (at) => fsCall(`mkdir ${path}`, () => mkdir(at)));
  }

  async mkdirAll(path: StoragePath, signal?: AbortSignal): Promise<void> {
    let level = '';
    for (const segment of path === '' ? [] : path.split('/')) {
      throwIfAborted(signal);
      level = joinPath(level, segment);
      const found = await this.lookup(level);
      if (found && !found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${level}`);
      if (!found) {
        const dir = level;
        await this.atPath(dir, (at) =>
          mkdir(at).catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw classify(err, `mkdir ${dir}`);
          }),
        );
      }
    }
  }

  async rmdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (path === '') throw new StorageError('Denied', 'cannot remove the root directory');
    const found = await this.lookup(path);
    if (!found) throw new StorageError('NotFound', `no such directory: ${path}`);
    if (!found.stats.isDirectory()) throw new StorageError('NotADirectory', `not a directory: ${path}`);
    const notEmpty = (): boolean => this.#writes.under(`${path}/`);
    if (notEmpty()) throw new StorageError('NotEmpty', `directory not empty: ${path}`);
    throwIfAborted(signal);
    await this.atPath(path, async (at) => {
      await dropLoneMetaDir(at);
      await fsCall(`rmdir ${path}`, () => rmdir(at));
      // An upload that started meanwhile found the directory there: it is made again for it (550).
      if (notEmpty()) {
        await mkdir(at).catch(() => undefined);
        throw new StorageError('NotEmpty', `directory not empty: ${path}`);
      }
    });
  }

  async delete(path: StoragePath, signal?: AbortSignal): Promise<void> {
    await this.#onePerPath([path], async () => {
      const found = await this.lookup(path);
      if (!found) throw new StorageError('NotFound', `no such file: ${path}`);
      if (found.stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
      throwIfAborted(signal);
      await this.atPath(path, async (at) => {
        await fsCall(`delete ${path}`, () => unlink(at));
        await rm(sidecarPath(at), { force: true }).catch(() => undefined);
      });
    });
  }

  /** Sets a file's mtime (lutimes: a link is never followed); its sidecar stays valid across it. */
  async setModificationTime(path: StoragePath, mtime: Date, signal?: AbortSignal): Promise<void> {
    // A step of its own: an append published meanwhile would otherwise replace the file it dated.
    await this.#onePerPath([path], async () => {
      const found = await this.lookup(path);
      if (!found) throw new StorageError('NotFound', `no such file: ${path}`);
      if (found.stats.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
      throwIfAborted(signal);
      const sidecar = await readSidecar(found.full, found.stats);
      await this.atPath(path, (at) => fsCall(`set mtime ${path}`, () => lutimes(at, found.stats.atime, mtime)));
      if (sidecar) {
        const stats = await lstat(found.full).catch(() => undefined);
        if (stats?.ino === sidecar.ino) await writeSidecar(found.full, { ...sidecar, mtimeMs: stats.mtimeMs }).catch(() => undefined);
      }
    });
  }

  async rename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void> {
    if (from === '') throw new StorageError('Denied', 'cannot rename the root directory');
    if (from === to || to.startsWith(`${from}/`)) {
      throw new StorageError('InvalidName', `cannot move ${from} onto or into itself`);
    }
    await this.#onePerPath([from, to], () => this.#rename(from, to, signal));
  }

  async #rename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void> {
    const source = await this.lookup(from);
    if (!source) throw new StorageError('NotFound', `no such file or directory: ${from}`);
    // An upload publishes where it was sent: moved away, its directory would lose it (and RMD would not see it).
    const moved = source.stats.isDirectory() ? this.#writes.startMove(`${from}/`) : undefined;
    try {
      await this.#move(from, to, source, signal);
    } finally {
      moved?.();
    }
  }

  async #move(from: StoragePath, to: StoragePath, source: { stats: Stats }, signal?: AbortSignal): Promise<void> {
    await this.requireDirectory(parentPath(to));
    const target = await this.lookup(to);
    // Same rule as S3: only a file may replace a file.
    if (target && (target.stats.isDirectory() || source.stats.isDirectory())) {
      throw new StorageError('Exists', `already exists: ${to}`);
    }
    throwIfAborted(signal);
    // Both ends are reached afresh from the root: a rename can neither take a file from outside nor put one there.
    await this.atPath(from, (src) =>
      this.atPath(to, async (dst) => {
        await fsCall(`rename ${from}`, () => rename(src, dst));
        // A directory's sidecars moved with it; a file's follows it (best effort: a stale one never matches).
        if (!source.stats.isDirectory()) await moveSidecar(src, dst);
      }),
    );
  }

  /**
   * Removes temp files of uploads (in the reserved partial directory) last
   * written more than `olderThanMs` ago that this process is not writing:
   * those of a server that was killed mid-transfer. The age must exceed the
   * longest pause in a transfer another running instance on the same directory may make.
   */
  async sweep(olderThanMs: number, signal?: AbortSignal): Promise<{ removed: number }> {
    const dir = join(await this.root(), PARTIAL_DIR);
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw classify(err, 'sweep');
    });
    for (const name of names) {
      throwIfAborted(signal);
      const temp = join(dir, name);
      if (this.temps.has(temp)) continue;
      const stats = await lstat(temp).catch(() => undefined);
      if (!stats?.isFile() || stats.mtimeMs > cutoff) continue;
      if (await unlink(temp).then(() => true, () => false)) removed++;
    }
    return { removed };
  }

  async close(): Promise<void> {}

  async ping(): Promise<void> {
    // Creates the data directory as the first request would, then checks it is one we can write.
    const root = await this.root();
    await fsCall('open data directory', () => access(root, constants.R_OK | constants.W_OK));
  }

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

  /**
   * Runs `fn` with a path to `path` whose directory part the kernel does not
   * resolve again: it names the parent directory as opened by a walk from the
   * root that followed no symbolic link. Whatever is renamed meanwhile, the
   * use happens beneath the root. (The last component is the caller's to
   * treat: rename and unlink do not follow it, opens use O_NOFOLLOW.)
   */
  private async atPath<T>(path: StoragePath, fn: (at: string) => Promise<T>): Promise<T> {
    if (!FD_PATHS) return fn(await this.resolve(path));
    const parent = await this.openParent(path);
    try {
      return await fn(`${fdPath(parent)}/${baseName(path)}`);
    } finally {
      await parent.close();
    }
  }

  /**
   * Opens `path` itself (never through a link, the last component included)
   * with `flags`, and without blocking: a FIFO put there by another process
   * would hold a thread-pool thread in open(2) until something wrote to it.
   */
  private async openAt(path: StoragePath, flags: number): Promise<FileHandle> {
    if (path === '') return fsCall('open data directory', async () => open(await this.root(), flags));
    return this.atPath(path, (at) => fsCall(`open ${path}`, () => open(at, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK)));
  }

  /**
   * The parent directory of `path`, opened component by component from the
   * root, each with O_NOFOLLOW | O_DIRECTORY relative to the one before: the
   * emulation of openat(2) that FD_PATHS allows. NotFound when a component is
   * missing, a link or not a directory.
   */
  private async openParent(path: StoragePath): Promise<FileHandle> {
    const root = await this.root();
    const flags = constants.O_RDONLY | constants.O_DIRECTORY;
    let dir = await fsCall('open data directory', () => open(root, flags));
    const parent = parentPath(path);
    try {
      for (const segment of parent === '' ? [] : parent.split('/')) {
        const next = await open(`${fdPath(dir)}/${segment}`, flags | constants.O_NOFOLLOW);
        await dir.close();
        dir = next;
      }
      return dir;
    } catch (err) {
      await dir.close();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') {
        throw new StorageError('NotFound', `no such file or directory: ${path}`, { cause: err });
      }
      throw classify(err, `resolve ${path}`);
    }
  }

  /**
   * lstat of a path, or undefined when it does not exist, runs through a
   * file, or is neither a file nor a directory (a symbolic link, a FIFO, a
   * socket or a device another process put there: listings skip them too).
   */
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
    if (!visible(stats)) return undefined;
    return { full, stats };
  }

  /** Resolves when path is a directory; NotFound otherwise (also when it is a file). */
  private async requireDirectory(path: StoragePath): Promise<void> {
    const found = await this.lookup(path);
    if (!found?.stats.isDirectory()) throw new StorageError('NotFound', `no such directory: ${path}`);
  }

  /**
   * Checks the target and parent of a write; returns the target's path and
   * the byte offset to keep. Two system calls, not five (small files are
   * latency-bound): the parent's real path must be its plain join (no link
   * on the way, the parent itself included), and the target's lstat tells
   * the rest: ENOTDIR means the parent is a file.
   */
  private async prepareWrite(path: StoragePath, options: WriteOptions): Promise<{ full: string; offset: number; base: Base | undefined }> {
    if (path === '') throw new StorageError('IsADirectory', 'the root is a directory');
    const root = await this.root();
    const parent = parentPath(path);
    const dir = join(root, parent);
    const missingParent = (cause?: unknown) => new StorageError('NotFound', `no such directory: ${parent}`, { cause });
    const real = await realpath(dir).catch((err: NodeJS.ErrnoException) => {
      throw ['ENOENT', 'ENOTDIR', 'ELOOP'].includes(err.code ?? '') ? missingParent(err) : classify(err, `resolve ${path}`);
    });
    if (real !== dir) throw missingParent();
    const full = join(root, path);
    const stats = await lstat(full).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err.code === 'ENOTDIR' ? missingParent(err) : classify(err, `stat ${path}`);
    });
    // What is not a file or directory (a link, a FIFO) is invisible (NotFound elsewhere): the rename replaces it.
    const found = stats && visible(stats) ? stats : undefined;
    if (found?.isDirectory()) throw new StorageError('IsADirectory', `is a directory: ${path}`);
    const size = found?.size ?? 0;
    const offset = options.append ? size : (options.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new StorageError('InvalidRange', `offset ${offset} is beyond the end of ${path} (${size} bytes)`);
    }
    const keeps = options.append === true || offset > 0;
    const base: Base | undefined = keeps && found ? { ino: found.ino, size: found.size, mtimeMs: found.mtimeMs } : keeps || options.createOnly ? 'absent' : undefined;
    return { full, offset, base };
  }

  /**
   * Moves a finished temp file into place, its sidecar first: inode and mtime
   * survive the rename, so the sidecar is valid the moment the file appears.
   * With `base` (an append, a resume or a create-only write), only over that
   * same, unchanged file (or none): a file made, replaced or written meanwhile
   * fails the write instead of being lost. Resolves the size installed.
   */
  private async install(temp: string, path: StoragePath, record: Pick<Sidecar, 'metadata'>, signal?: AbortSignal, base?: Base): Promise<number> {
    const stats = await lstat(temp);
    // The check below and the rename are one step for every change to this name made here: installs,
    // deletes, renames (another process writing DATA_DIR is not covered).
    await this.#onePerPath([path], () =>
      // The target's directory is reached afresh: the transfer took long, and its path may have been renamed meanwhile.
      this.atPath(path, async (full) => {
        if (base) {
          // A link or a FIFO there is no file, as for prepareWrite: the rename replaces it.
          const now = await lstat(full).then((st) => (visible(st) ? st : undefined), () => undefined);
          const same = base === 'absent' ? now === undefined : now !== undefined && now.ino === base.ino && now.size === base.size && now.mtimeMs === base.mtimeMs;
          if (!same) throw new StorageError('Unavailable', `${path} changed during the upload`);
        }
        await writeSidecar(full, { ...record, size: stats.size, mtimeMs: stats.mtimeMs, ino: stats.ino }).catch(() => undefined);
        // The last moment a write can be taken back: an aborted session publishes nothing. Right
        // after a file system callback, one loop turn first reads what else had arrived (a close, an ABOR).
        await nextTurn();
        throwIfAborted(signal);
        await rename(temp, full);
      }),
    );
    return stats.size;
  }

  /**
   * Runs `fn` once every earlier step on any of `paths` has settled, and
   * before any later one starts: what changes a file under its name (an
   * upload's publish, a delete, a rename at either end, MFMT) is one step
   * per name in this process. Names are taken in one order, so two renames that swap names
   * cannot wait for each other.
   */
  async #onePerPath<T>(paths: StoragePath[], fn: () => Promise<T>): Promise<T> {
    const [path, ...rest] = [...new Set(paths)].sort();
    if (path === undefined) return fn();
    const run = (this.#steps.get(path) ?? Promise.resolve()).then(() => this.#onePerPath(rest, fn));
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.#steps.set(path, settled);
    try {
      return await run;
    } finally {
      if (this.#steps.get(path) === settled) this.#steps.delete(path);
    }
  }

  /**
   * Creates a fresh temp file with `create` (given its path) under the temp
   * directory. No FTP path can name that directory (reserved prefix), so no
   * client can rename a link into its place; it is still checked to be a
   * real directory, once, and the temp file is created with O_EXCL, which
   * follows no link. If the directory went away meanwhile (ENOENT), it is
   * made again and `create` runs once more.
   */
  private async tempFile<T>(create: (temp: string) => Promise<T>): Promise<{ temp: string; handle: T }> {
    for (let attempt = 1; ; attempt++) {
      const temp = join(await (this.partialDir ??= this.makePartialDir()), randomUUID());
      try {
        return { temp, handle: await create(temp) };
      } catch (err) {
        this.temps.delete(temp);
        await unlink(temp).catch(() => undefined);
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 1) throw err;
        this.partialDir = undefined;
      }
    }
  }

  private async makePartialDir(): Promise<string> {
    const dir = join(await this.root(), PARTIAL_DIR);
    try {
      await mkdir(dir, { recursive: true });
      if (!(await lstat(dir)).isDirectory()) throw new StorageError('Unavailable', `${PARTIAL_DIR} is not a directory`);
      return dir;
    } catch (err) {
      this.partialDir = undefined;
      throw err;
    }
  }

  /** Reads entry metadata for one page; entries that vanished or are links are dropped. */
  private async entries(dir: string, names: string[]): Promise<FileInfo[]> {
    const infos = await Promise.all(
      names.map(async (name) => {
        const stats = await lstat(join(dir, name)).catch(() => undefined);
        if (!stats || !visible(stats)) return undefined;
        return toInfo(name, stats);
      }),
    );
    return infos.filter((info): info is FileInfo => info !== undefined);
  }
}

/**
 * Writes body into the open file at offset, flushes it to disk, closes it,
 * and returns the file's final size. `received` counts body bytes written,
 * also when the body fails (what was written is flushed then too, for
 * keepPartialUploads).
 */
async function writeBody(
  handle: FileHandle,
  offset: number,
  body: Readable,
  received: { bytes: number },
  digest: Digest | undefined,
): Promise<number> {
  let syncing: Promise<void> | undefined;
  try {
    let position = offset;
    // Chunks go to the file WRITE_BATCH_BYTES at a time: one thread-pool round trip per batch, not per 64 KiB.
    let batch: Buffer[] = [];
    let batched = 0;
    // The disk flushes while bytes still arrive: an fdatasync every SYNC_AHEAD_BYTES, one
    // at a time, so the fsync before publishing has only the tail left to write.
    let unsynced = 0;
    const flush = async (): Promise<void> => {
      await writeAll(handle, batch, position);
      position += batched;
      received.bytes += batched;
      unsynced += batched;
      batch = [];
      batched = 0;
      if (unsynced >= SYNC_AHEAD_BYTES && !syncing) {
        unsynced = 0;
        syncing = handle.datasync().finally(() => (syncing = undefined));
        syncing.catch(() => undefined); // the final sync reports a disk that fails
      }
    };
    try {
      for await (const chunk of body) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
        digest?.update(buf);
        batch.push(buf);
        batched += buf.length;
        if (batched >= WRITE_BATCH_BYTES) await flush();
      }
      await flush();
    } catch (err) {
      // What was received is on disk too (keepPartialUploads publishes it).
      await flush().catch(() => undefined);
      await handle.sync().catch(() => undefined);
      throw err;
    }
    // Without the fsync the rename could reach the disk before the data does.
    await syncing?.catch(() => undefined);
    await handle.sync();
    return position;
  } finally {
    await syncing?.catch(() => undefined);
    await handle.close();
  }
}

/** Writes buffers at position, however many calls it takes. */
async function writeAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    let { bytesWritten } = await handle.writev(rest, position);
    position += bytesWritten;
    // A short write (rare on a regular file): drop what went, then go on with the rest.
    const left: Buffer[] = [];
    for (const buf of rest) {
      if (bytesWritten >= buf.length) bytesWritten -= buf.length;
      else {
        left.push(buf.subarray(bytesWritten));
        bytesWritten = 0;
      }
    }
    rest = left;
  }
}

/** A path naming an open file or directory itself (see FD_PATHS). */
function fdPath(handle: FileHandle): string {
  return `/proc/self/fd/${handle.fd}`;
}

function sidecarPath(full: string): string {
  return join(dirname(full), META_DIR, `${basename(full)}.json`);
}

/** Writes a sidecar atomically (temp then rename), so a reader never sees half of one. */
async function writeSidecar(full: string, sidecar: Sidecar): Promise<void> {
  const path = sidecarPath(full);
  await makeMetaDir(dirname(path));
  const temp = join(dirname(path), `${randomUUID()}.tmp`);
  await writeFile(temp, JSON.stringify(sidecar));
  await rename(temp, path).catch(async (err: unknown) => {
    await unlink(temp).catch(() => undefined);
    throw err;
  });
}

/**
 * Makes a directory's sidecar directory, one level only. Its parent is
 * reached through /proc/self/fd (an open directory); if another session
 * removed that directory meanwhile, Node's recursive mkdir retries forever
 * (ENOENT for the child, "exists" for the parent) and holds a thread and the
 * main loop at full CPU. A plain mkdir fails with ENOENT instead.
 */
async function makeMetaDir(dir: string): Promise<void> {
  await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
}

/** The sidecar of a file, if there is one and it still describes this very file. */
async function readSidecar(full: string, stats: Stats): Promise<Sidecar | undefined> {
  let handle: FileHandle | undefined;
  try {
    // Without blocking, and a regular file only: another process may have put a FIFO there.
    handle = await open(sidecarPath(full), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    if (!(await handle.stat()).isFile()) return undefined;
    const sidecar = JSON.parse(await handle.readFile('utf8')) as Partial<Sidecar>;
    const current = sidecar.size === stats.size && sidecar.mtimeMs === stats.mtimeMs && sidecar.ino === stats.ino;
    // Only what this version writes: older sidecars also held a SHA-256, which is no longer kept.
    return current ? { metadata: sidecar.metadata, size: stats.size, mtimeMs: stats.mtimeMs, ino: stats.ino } : undefined;
  } catch {
    return undefined;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Moves a file's sidecar along with it, or drops the target's stale one when the file had none. */
async function moveSidecar(from: string, to: string): Promise<void> {
  const target = sidecarPath(to);
  try {
    await makeMetaDir(dirname(target));
    await rename(sidecarPath(from), target);
  } catch {
    await rm(target, { force: true }).catch(() => undefined);
  }
}

/** A directory holding nothing but sidecars is empty to its users; remove them so rmdir succeeds. */
async function dropLoneMetaDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.length === 1 && names[0] === META_DIR) await rm(join(dir, META_DIR), { recursive: true, force: true });
}

/** Files and directories; links, FIFOs, sockets and devices another process put in DATA_DIR are not shown or used. */
function visible(stats: Stats): boolean {
  return stats.isFile() || stats.isDirectory();
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
  // open(2) of a UNIX socket another process put in DATA_DIR: no file, as for a FIFO.
  ENXIO: 'NotFound',
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

/** Stops a call between its steps once the session is gone. */
function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StorageError('Unavailable', 'aborted', { cause: signal.reason });
}

function abortError(signal: AbortSignal | undefined): Error {
  return Object.assign(new Error('aborted', { cause: signal?.reason }), { name: 'AbortError' });
}
