/**
 * s3ftp as a library: `import { createServer, loadConfig } from 's3ftp'`.
 * Importing this module starts nothing, reads no environment and opens no
 * socket; only createServer() listens. The `s3ftp` command (src/main.ts) is
 * built on the same function.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from './config/index.js';
import { createLogger, type Logger } from './log.js';
import { startHealthServer, type HealthServer } from './server/health.js';
import { Metrics } from './server/metrics.js';
import { startServer } from './server/server.js';
import { ExternalAuth } from './auth/external.js';
import { EventSink } from './events/sink.js';
import { createStorage } from './storage/index.js';
import { Storages } from './storage/storages.js';
import type { Storage } from './storage/types.js';
import type { UsersReload } from './auth/users-source.js';

export { hashPassword, parseUsersFile, type PasswordSecret, type User } from './auth/users.js';
export type { UsersFileConfig, UsersReload } from './auth/users-source.js';
export { configSource, loadConfigWithFile, type ConfigSource, type LoadedConfig } from './config/file.js';
export {
  ConfigError,
  loadConfig,
  type Config,
  type FtpsConfig,
  type LimitsConfig,
  type LocalStorageConfig,
  type S3StorageConfig,
  type StorageConfig,
} from './config/index.js';
export type { Logger } from './log.js';
export { StorageError, type Storage, type StorageErrorCode } from './storage/types.js';

/** How long queued file events may take to be delivered at shutdown, after the sessions ended. */
const EVENTS_CLOSE_GRACE_MS = 10_000;

export interface CreateServerOptions {
  /** Where the server logs; default: JSON lines on stdout at `config.logLevel` (pino). */
  logger?: Logger;
}

/** A running s3ftp: its FTP listeners, the optional health port, and the storage they share. */
export interface S3FtpServer {
  /** The control listener's address (port 0 in the config picks a free one). */
  readonly address: AddressInfo;
  /** The implicit-FTPS listener's address, when `config.ftps.implicitPort` is set. */
  readonly implicitAddress?: AddressInfo;
  /** The /healthz, /readyz and /metrics listener's address, when `config.health` is set. */
  readonly healthAddress?: AddressInfo;
  readonly storage: Storage;
  readonly logger: Logger;
  /**
   * Shuts down as on SIGTERM: /readyz turns 503, new connections are refused,
   * idle sessions end at once, transfers get `graceMs` (default
   * `config.shutdownGraceMs`) to finish; then the health port and the storage close.
   */
  close(graceMs?: number): Promise<void>;
  /**
   * Re-reads `config.usersFile` as on SIGHUP: a valid new version replaces the
   * users at once (info log), an invalid one is refused (error log) and the
   * users stay. Sessions already logged in keep their user until they log in
   * again. `trigger` names the asker in the log line. Resolves with the
   * outcome; never rejects.
   */
  reloadUsers(trigger?: string): Promise<UsersReload>;
}

/**
 * Starts an FTP server for `config` (from loadConfig(), or built by hand) and
 * resolves once every listener is bound. Users come from `config.users`
 * (with none, nobody can log in), replaced by a re-read of `config.usersFile`
 * when set (every `reloadMs`, and reloadUsers()).
 */
export async function createServer(config: Config, options: CreateServerOptions = {}): Promise<S3FtpServer> {
  const logger = options.logger ?? createLogger({ level: config.logLevel, pretty: config.logPretty });
  const metrics = new Metrics();
  const storages = new Storages(config.storage, (c) =>
    createStorage(c, logger, { onRequest: (op, seconds, ok) => metrics.s3Request(op, seconds, ok) }),
  );
  const storage = storages.main;
  const events = config.events
    ? new EventSink(config.events, { log: logger, count: (outcome, n) => metrics.events.inc({ outcome }, n) })
    : undefined;
  const externalAuth = config.externalAuth ? new ExternalAuth(config.externalAuth) : undefined;
  let health: HealthServer | undefined;
  try {
    const server = await startServer(config, storages, logger, { metrics, events, externalAuth });
    try {
      if (config.health) health = await startHealthServer({ ...config.health, storage, metrics, log: logger });
    } catch (err) {
      await server.close(0);
      throw err;
    }
    let closing: Promise<void> | undefined;
    return {
      address: server.address,
      implicitAddress: server.implicitAddress,
      healthAddress: health?.address,
      storage,
      logger,
      reloadUsers: (trigger?: string) => server.reloadUsers(trigger),
      close(graceMs = config.shutdownGraceMs) {
        closing ??= (async () => {
          // Not ready from now on, so a load balancer sends new clients elsewhere while sessions drain.
          health?.drain();
          await server.close(graceMs);
          // After the sessions, so the last uploads' events are queued; a short grace of its own.
          await events?.close(EVENTS_CLOSE_GRACE_MS);
          await health?.close();
          await storages.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    await storages.close();
    throw err;
  }
}
