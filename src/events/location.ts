import type { StorageConfig } from '../config/index.js';
import type { StoragePath } from '../storage/types.js';

/**
 * Where a storage path lives, for an event: the bucket and object key on S3
 * (the prefix joined as the S3 driver joins it), the key alone (relative to
 * DATA_DIR) on the local driver, where there is no bucket.
 */
export function storageLocation(storage: StorageConfig, path: StoragePath): { bucket?: string; key: string } {
  if (storage.kind === 'local') return { key: path };
  const key = storage.prefix === '' ? path : path === '' ? storage.prefix : `${storage.prefix}/${path}`;
  return { bucket: storage.bucket, key };
}
