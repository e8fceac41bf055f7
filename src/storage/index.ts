import type { Logger } from 'pino';
import type { StorageConfig } from '../config/index.js';
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { Storage } from './types.js';

/** The storage driver the configuration asks for; the rest of the server sees only Storage. */
export function createStorage(config: StorageConfig, logger?: Logger): Storage {
  switch (config.kind) {
    case 's3':
      return new S3Storage(config, { logger });
    case 'local':
      return new LocalStorage(config);
  }
}
