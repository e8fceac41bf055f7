import type { Logger } from 'pino';
import type { StorageConfig } from '../config/index.js';
import { LocalStorage, type LocalStorageOptions } from './local.js';
import { S3Storage, type S3StorageOptions } from './s3.js';
import type { Storage } from './types.js';

/** Driver settings beyond the configuration: page sizes, socket pools, metrics. */
export type StorageOptions = Omit<S3StorageOptions, 'logger'> & LocalStorageOptions;

/** The storage driver the configuration asks for; the rest of the server sees only Storage. */
export function createStorage(config: StorageConfig, logger?: Logger, options: StorageOptions = {}): Storage {
  switch (config.kind) {
    case 's3':
      return new S3Storage(config, { ...options, logger });
    case 'local':
      return new LocalStorage(config, { pageSize: options.pageSize });
  }
}
