import type { StorageConfig } from '../config/index.js';
import type { Location, Mount } from './mounts.js';
import { MountedStorage } from './mounts.js';
import type { Storage, StoragePath } from './types.js';

/** Where a user's path is stored: a directory of the server's storage, or of another bucket (`s3://bucket/prefix`). */
export interface StorageTarget {
  /** Another bucket; undefined: the server's storage (S3_BUCKET under S3_PREFIX, or DATA_DIR). */
  bucket?: string;
  /** The directory: relative to the server's storage root, or a key prefix in `bucket`. */
  path: StoragePath;
}

/** What a user's mount table is made from (the users file's `home` and `mounts`). */
export interface UserStorage {
  /** The user's '/'; undefined when `/` holds nothing but the mounts. */
  home?: StoragePath;
  homeBucket?: string;
  /** Logical directories (user paths, '/outgoing') shown from elsewhere. */
  mounts?: ReadonlyArray<{ dir: string; target: StorageTarget }>;
}

/**
 * The storages a server serves from: its own (S3_BUCKET, or DATA_DIR), and
 * one driver per extra bucket named in S3_EXTRA_BUCKETS. Users' mounts may
 * name only these, so neither a users file nor an identity provider can
 * point anyone at a bucket the operator did not list.
 */
export class Storages {
  readonly main: Storage;
  readonly #config: StorageConfig;
  readonly #buckets = new Map<string, Storage>();

  constructor(config: StorageConfig, create: (config: StorageConfig) => Storage) {
    this.#config = config;
    this.main = create(config);
    if (config.kind === 's3') {
      // s3://<S3_BUCKET>/… names keys from the bucket's top, above S3_PREFIX.
      for (const bucket of new Set([config.bucket, ...(config.extraBuckets ?? [])])) {
        const whole = bucket === config.bucket && config.prefix === '';
        this.#buckets.set(bucket, whole ? this.main : create({ ...config, bucket, prefix: '' }));
      }
    }
  }

  /** Every driver, the server's first. */
  get all(): Storage[] {
    return [...new Set([this.main, ...this.#buckets.values()])];
  }

  /**
   * The user's view: a mount table in front of these storages. Throws an
   * Error that says what is wrong when the user names a bucket not served.
   */
  viewFor(user: UserStorage): MountedStorage {
    const mounts: Mount[] = [];
    if (user.home !== undefined) mounts.push(this.#mount('', { bucket: user.homeBucket, path: user.home }));
    for (const { dir, target } of user.mounts ?? []) mounts.push(this.#mount(dir.slice(1), target));
    return new MountedStorage(mounts);
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((s) => s.close()));
  }

  #mount(at: StoragePath, target: StorageTarget): Mount {
    const config = this.#config;
    if (target.bucket === undefined) {
      return { at, storage: this.main, root: target.path, locate: (path) => locate(config, path) };
    }
    const problem = storageProblem(config, { mounts: [{ dir: `/${at}`, target }] });
    const storage = this.#buckets.get(target.bucket);
    if (problem !== undefined || !storage) throw new Error(problem);
    const bucket = target.bucket;
    return { at, storage, root: target.path, locate: (key) => ({ bucket, key }) };
  }
}

/**
 * Why a user's storage cannot be served, or undefined: a bucket that is not
 * the server's or in S3_EXTRA_BUCKETS (the users file is checked at start,
 * and every user again at login, identity-provider users included).
 */
export function storageProblem(config: StorageConfig, user: UserStorage): string | undefined {
  const targets = [{ bucket: user.homeBucket }, ...(user.mounts ?? []).map((m) => m.target)];
  for (const { bucket } of targets) {
    if (bucket === undefined) continue;
    if (config.kind !== 's3') return `s3://${bucket} needs the S3 driver (S3_BUCKET)`;
    if (bucket !== config.bucket && !(config.extraBuckets ?? []).includes(bucket)) return `bucket "${bucket}" is not served: list it in S3_EXTRA_BUCKETS`;
  }
  return undefined;
}

/**
 * Where a path of the server's storage lives: the bucket and object key on
 * S3 (the prefix joined as the S3 driver joins it), the path alone (relative
 * to DATA_DIR) on the local driver, where there is no bucket.
 */
function locate(storage: StorageConfig, path: StoragePath): Location {
  if (storage.kind === 'local') return { key: path };
  const key = storage.prefix === '' ? path : path === '' ? storage.prefix : `${storage.prefix}/${path}`;
  return { bucket: storage.bucket, key };
}
