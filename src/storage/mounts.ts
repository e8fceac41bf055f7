import type { Readable } from 'node:stream';
import { MAX_PATH_BYTES } from '../paths.js';
import {
  baseName,
  joinPath,
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
  type StoragePath,
  type WriteOptions,
  type WriteResult,
} from './types.js';

/** Where a mapped path lives, for events and logs: the bucket and key on S3, the path on the local driver. */
export interface Location {
  bucket?: string;
  key: string;
}

/** One entry of a user's mount table: the user's path `at` shows `storage` from `root` down. */
export interface Mount {
  /** A user path ('' for the user's '/', 'outgoing', 'a/b'): the same form as every StoragePath. */
  at: StoragePath;
  storage: Storage;
  /** The directory in `storage` that `at` shows. */
  root: StoragePath;
  /** The bucket and key of a path in `storage`. */
  locate(path: StoragePath): Location;
}

/** A user path resolved through the table. */
interface Resolved {
  mount: Mount;
  path: StoragePath;
}

const EPOCH = new Date(0);

/**
 * A user's view of storage: a mount table in front of the drivers, itself a
 * Storage, so handlers never learn about mappings. Each user path goes to the
 * mount with the longest `at` that holds it, and below it to `root`. Paths
 * are normalised before they get here (no '..'), so no path leaves the mount
 * it resolved to: confinement is the table's lookup, nothing more.
 *
 * Mount points, and the directories above them that no mount holds (the '/'
 * of a user who has only `/incoming` and `/outgoing`), are fixed: they list
 * as directories and cannot be removed, renamed or written over. A path no
 * mount holds and that leads to no mount point does not exist, and nothing
 * can be made there. A rename is a storage's own rename, so it cannot cross
 * from one storage to another: that is refused (553) rather than turned
 * into a copy the client did not ask for.
 */
export class MountedStorage implements Storage {
  readonly capabilities: StorageCapabilities;
  /** Longest `at` first, so the first that holds a path is the most specific. */
  readonly #mounts: readonly Mount[];
  /** Every mount point and every directory above one: fixed directories. */
  readonly #fixed: ReadonlySet<StoragePath>;

  constructor(mounts: readonly Mount[]) {
    this.#mounts = [...mounts].sort((a, b) => b.at.length - a.at.length);
    const fixed = new Set<StoragePath>();
    for (const { at } of mounts) {
      for (let p = at; ; p = parentPath(p)) {
        fixed.add(p);
        if (p === '') break;
      }
    }
    this.#fixed = fixed;
    const storages = [...new Set(mounts.map((m) => m.storage))];
    this.capabilities = {
      resumeUpload: storages.every((s) => s.capabilities.resumeUpload),
      setModificationTime: storages.every((s) => s.capabilities.setModificationTime),
    };
  }

  /** A mount point, or a directory above one (the root included): it cannot be removed or renamed. */
  isFixed(path: StoragePath): boolean {
    return this.#fixed.has(path);
  }

  /** Where a user path is stored; undefined when no mount holds it. */
  locate(path: StoragePath): Location | undefined {
    const r = this.#resolve(path);
    return r && r.mount.locate(r.path);
  }

  async stat(path: StoragePath, signal?: AbortSignal): Promise<FileInfo> {
    const r = this.#resolve(path);
    if (this.#fixed.has(path)) {
      const info = r ? await r.mount.storage.stat(r.path, signal).catch(() => undefined) : undefined;
      return { name: baseName(path), isDirectory: true, size: 0, mtime: info?.isDirectory ? info.mtime : EPOCH };
    }
    const info = await this.#held(path).mount.storage.stat(this.#held(path).path, signal);
    return { ...info, name: baseName(path) };
  }

  async *list(path: StoragePath, signal?: AbortSignal, options?: ListOptions): AsyncIterable<FileInfo[]> {
    const children = this.#fixedChildren(path);
    const r = this.#resolve(path);
    if (!r) {
      if (!this.#fixed.has(path)) throw new StorageError('NotFound', 'no such directory');
    } else {
      try {
        // A mount point hides whatever the storage above it has under that name.
        for await (const page of r.mount.storage.list(r.path, signal, options)) {
          const shown = children.size === 0 ? page : page.filter((e) => !children.has(e.name));
          if (shown.length > 0) yield shown;
        }
      } catch (err) {
        // A fixed directory the storage above does not hold (or holds as a file) lists its mounts alone (before any page).
        if (!(this.#fixed.has(path) && err instanceof StorageError && (err.code === 'NotFound' || err.code === 'NotADirectory'))) throw err;
      }
    }
    if (children.size > 0) {
      yield await Promise.all([...children].map((name) => this.stat(joinPath(path, name), signal)));
    }
  }

  read(path: StoragePath, options?: ReadOptions): Promise<OpenedRead> {
    if (this.#fixed.has(path)) return Promise.reject(new StorageError('IsADirectory', 'is a directory'));
    const r = this.#held(path);
    return r.mount.storage.read(r.path, options);
  }

  // Async: whatever goes wrong is a rejection, never a throw before the caller holds the promise.
  async write(path: StoragePath, body: Readable, options?: WriteOptions): Promise<WriteResult> {
    if (this.#fixed.has(path)) throw new StorageError('IsADirectory', 'is a directory');
    const r = this.#resolve(path);
    if (!r) throw new StorageError('Denied', 'outside every storage mapping');
    return r.mount.storage.write(r.path, body, options);
  }

  async mkdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (this.#fixed.has(path)) throw new StorageError('Exists', 'exists');
    const r = this.#resolve(path);
    if (!r) throw new StorageError('Denied', 'outside every storage mapping');
    await r.mount.storage.mkdir(r.path, signal);
  }

  async mkdirAll(path: StoragePath, signal?: AbortSignal): Promise<void> {
    // A fixed directory exists as long as the mounts at and below it do: make the roots that are missing.
    if (this.#fixed.has(path)) {
      for (const m of this.#mounts) {
        if (path !== '' && m.at !== path && !m.at.startsWith(`${path}/`)) continue;
        if (await missing(m.storage, m.root, signal)) await m.storage.mkdirAll(m.root, signal);
      }
      // A fixed directory inside a mount (the `pub` of `/pub/shared` under the home) is made there
      // too, so what MKD calls existing takes files; over a file of the same name it stays a listing.
      for (const p of this.#fixed) {
        const r = p !== path && (path === '' || p.startsWith(`${path}/`)) ? this.#resolve(p) : undefined;
        if (!r || r.mount.at === p || !(await missing(r.mount.storage, r.path, signal))) continue;
        await r.mount.storage.mkdirAll(r.path, signal).catch((err: unknown) => {
          if (!(err instanceof StorageError && err.code === 'NotADirectory')) throw err;
        });
      }
      return;
    }
    const r = this.#resolve(path);
    if (!r) throw new StorageError('Denied', 'outside every storage mapping');
    await r.mount.storage.mkdirAll(r.path, signal);
  }

  async rmdir(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (this.#fixed.has(path)) throw new StorageError('Denied', 'a storage mapping');
    const r = this.#held(path);
    await r.mount.storage.rmdir(r.path, signal);
  }

  async delete(path: StoragePath, signal?: AbortSignal): Promise<void> {
    if (this.#fixed.has(path)) throw new StorageError('IsADirectory', 'is a directory');
    const r = this.#held(path);
    await r.mount.storage.delete(r.path, signal);
  }

  async rename(from: StoragePath, to: StoragePath, signal?: AbortSignal): Promise<void> {
    // Moving a tree that holds a mount point would leave the mount behind (or move what it hides).
    if (this.#holdsFixed(from) || this.#fixed.has(to)) throw new StorageError('Denied', 'a storage mapping');
    const source = this.#held(from);
    const target = this.#resolve(to);
    if (!target) throw new StorageError('Denied', 'outside every storage mapping');
    if (source.mount.storage !== target.mount.storage) {
      throw new StorageError('InvalidName', 'source and target are in different storage mappings; download and upload instead');
    }
    await source.mount.storage.rename(source.path, target.path, signal);
  }

  hash(path: StoragePath, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<HashResult> {
    if (this.#fixed.has(path)) return Promise.reject(new StorageError('IsADirectory', 'is a directory'));
    const r = this.#held(path);
    return r.mount.storage.hash(r.path, algorithm, signal);
  }

  async setModificationTime(path: StoragePath, mtime: Date, signal?: AbortSignal): Promise<void> {
    if (this.#fixed.has(path)) throw new StorageError('Denied', 'a storage mapping');
    const r = this.#held(path);
    await r.mount.storage.setModificationTime(r.path, mtime, signal);
  }

  /** The drivers are the server's: sweeping, pinging and closing them is its business, not a user's view. */
  async sweep(): Promise<{ removed: number }> {
    return { removed: 0 };
  }

  async ping(): Promise<void> {
    for (const storage of new Set(this.#mounts.map((m) => m.storage))) await storage.ping();
  }

  async close(): Promise<void> {}

  #resolve(path: StoragePath): Resolved | undefined {
    const mount = this.#mounts.find((m) => m.at === '' || path === m.at || path.startsWith(`${m.at}/`));
    if (!mount) return undefined;
    const rest = mount.at === '' ? path : path.slice(mount.at.length + 1);
    const mapped = mount.root === '' ? rest : rest === '' ? mount.root : `${mount.root}/${rest}`;
    if (Buffer.byteLength(mapped) > MAX_PATH_BYTES) throw new StorageError('InvalidName', 'path too long');
    return { mount, path: mapped };
  }

  /** Resolves a path that must exist: one no mount holds does not. */
  #held(path: StoragePath): Resolved {
    const r = this.#resolve(path);
    if (!r) throw new StorageError('NotFound', 'no such file or directory');
    return r;
  }

  /** The names of fixed directories directly inside `dir`. */
  #fixedChildren(dir: StoragePath): Set<string> {
    const names = new Set<string>();
    for (const p of this.#fixed) {
      if (p !== '' && p !== dir && parentPath(p) === dir) names.add(baseName(p));
    }
    return names;
  }

  #holdsFixed(path: StoragePath): boolean {
    for (const p of this.#fixed) if (p === path || path === '' || p.startsWith(`${path}/`)) return true;
    return false;
  }
}


/** Whether `path` does not exist in `storage` (any other failure is thrown). */
async function missing(storage: Storage, path: StoragePath, signal?: AbortSignal): Promise<boolean> {
  try {
    await storage.stat(path, signal);
    return false;
  } catch (err) {
    if (err instanceof StorageError && err.code === 'NotFound') return true;
    throw err;
  }
}
