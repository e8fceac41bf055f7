import type { EventSink } from '../../src/events/sink.js';
import type { ExternalAuth } from '../../src/auth/external.js';
import { Storages } from '../../src/storage/storages.js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { User } from '../../src/auth/users.js';
import type { Config, S3StorageConfig, StorageConfig } from '../../src/config/index.js';
import type { Metrics } from '../../src/server/metrics.js';
import { startServer, type FtpServer } from '../../src/server/server.js';
import { createStorage, type StorageOptions } from '../../src/storage/index.js';
import type { Storage } from '../../src/storage/types.js';
import { getS3, listMultipartUploads, s3StorageConfig, type S3TestEnv } from './minio.js';
import { startS3Proxy, type ProxyDecide } from './s3-proxy.js';

export const USER = 'alice';
export const PASSWORD = 'correct horse battery staple';

/** One storage backend the protocol tests run against. */
export interface Driver {
  name: 'local' | 's3';
  /** Set when the driver cannot run here (never under CI: getS3 throws instead). */
  skip?: string;
  /** A storage config rooted at a fresh, empty place. */
  storageConfig(): StorageConfig;
  /** In-progress multipart uploads left behind under the config's root (always [] on local). */
  danglingUploads(config: StorageConfig): Promise<string[]>;
  s3?: S3TestEnv;
}

let counter = 0;
const tempDirs: string[] = [];
process.once('exit', () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary directory, removed when the process exits. */
export function tempDir(label = 's3ftp-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), label));
  tempDirs.push(dir);
  return dir;
}

/** The local driver and the S3 driver on real MinIO. */
export async function drivers(): Promise<Driver[]> {
  const s3 = await getS3();
  const local: Driver = {
    name: 'local',
    storageConfig: () => ({ kind: 'local', dataDir: tempDir() }),
    danglingUploads: async () => [],
  };
  const remote: Driver = {
    name: 's3',
    skip: s3 ? undefined : 'MinIO is not available (set CI=true to make this a failure)',
    storageConfig: () => s3StorageConfig(s3!, `t${process.pid}-${++counter}`),
    danglingUploads: (config) => listMultipartUploads(s3!, config.kind === 's3' ? config.prefix : ''),
    s3,
  };
  return [local, remote];
}

export interface TestServer {
  port: number;
  /** The implicit-FTPS port, when the config asks for one. */
  implicitPort?: number;
  storage: Storage;
  storageConfig: StorageConfig;
  config: Config;
  /** S3 requests the server's drivers finished, by operation ('GetObject'), from the drivers' onRequest metric. */
  s3Requests: Map<string, number>;
  close(graceMs?: number): Promise<void>;
}

/**
 * A test server on an S3 driver whose requests go through a proxy in front
 * of MinIO that answers as `decide` says (startS3Proxy), with `settings` over
 * the driver's S3 settings. Its close() closes the proxy too.
 */
export async function startBehindS3Proxy(
  driver: Driver,
  decide: ProxyDecide,
  settings: Partial<S3StorageConfig> = {},
  overrides: Partial<Config> = {},
  options: Parameters<typeof startTestServer>[2] = {},
): Promise<TestServer> {
  const base = driver.storageConfig();
  assert.equal(base.kind, 's3');
  const proxy = await startS3Proxy(base.endpoint!, decide);
  const server = await startTestServer({ ...driver, storageConfig: () => ({ ...base, endpoint: proxy.endpoint, ...settings }) }, overrides, options).catch(
    async (err: unknown) => {
      await proxy.close();
      throw err;
    },
  );
  return {
    ...server,
    async close(graceMs?: number) {
      await server.close(graceMs);
      await proxy.close();
    },
  };
}

/** Starts an s3ftp server on 127.0.0.1, port 0, with user alice, on the given driver. */
export async function startTestServer(
  driver: Driver,
  overrides: Partial<Config> = {},
  options: {
    logLines?: string[];
    logSink?: (line: string) => void;
    storageOptions?: StorageOptions;
    /** Puts a test's decorator in front of each driver the server uses. */
    wrapStorage?: (storage: Storage) => Storage;
    metrics?: Metrics;
    externalAuth?: ExternalAuth;
    events?: EventSink;
  } = {},
): Promise<TestServer> {
  const storageConfig = driver.storageConfig();
  const users: User[] = [{ name: USER, password: { kind: 'plain', value: PASSWORD }, home: '' }];
  const config: Config = {
    host: '127.0.0.1',
    port: 0,
    users,
    storage: storageConfig,
    logLevel: process.env.TEST_LOG_LEVEL ?? 'silent',
    logPretty: false,
    idleTimeoutMs: 60_000,
    loginTimeoutMs: 60_000,
    uploadSettleMs: 10,
    dataTimeoutMs: 15_000,
    maxCommandBytes: 4096,
    shutdownGraceMs: 5000,
    sweepAgeMs: 24 * 3600_000,
    limits: {
      maxConnections: 1000,
      maxConnectionsPerAddress: 1000,
      maxLoginFailures: 1000,
      loginFailureWindowMs: 60_000,
      lockoutMs: 60_000,
      failedLoginDelayMs: 500,
    },
    ...overrides,
  };
  const sink = options.logSink ?? (options.logLines ? (line: string) => void options.logLines!.push(line) : undefined);
  const log = sink ? pino({ level: 'info' }, { write: sink }) : pino({ level: config.logLevel });
  const wrap = options.wrapStorage ?? ((storage: Storage) => storage);
  const s3Requests = new Map<string, number>();
  const storageOptions: StorageOptions = {
    ...options.storageOptions,
    onRequest: (operation, seconds, ok) => {
      s3Requests.set(operation, (s3Requests.get(operation) ?? 0) + 1);
      options.storageOptions?.onRequest?.(operation, seconds, ok);
    },
  };
  const storages = new Storages(storageConfig, (c) => wrap(createStorage(c, log, storageOptions)));
  const storage = storages.main;
  const server: FtpServer = await startServer(config, storages, log, { metrics: options.metrics, externalAuth: options.externalAuth, events: options.events });
  return {
    port: server.address.port,
    implicitPort: server.implicitAddress?.port,
    storage,
    storageConfig,
    config,
    s3Requests,
    async close(graceMs?: number) {
      await server.close(graceMs);
      await storages.close();
    },
  };
}

/** A test's decorator (startTestServer's wrapStorage): the storage with one method replaced by `impl(storage)`. */
export function overriding<K extends keyof Storage>(storage: Storage, name: K, impl: (target: Storage) => Storage[K]): Storage {
  return new Proxy(storage, {
    get: (target, key) => {
      if (key === name) return impl(target);
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Waits until the driver reports no in-progress multipart upload (aborts finish after the reply). */
export async function noDanglingUploads(driver: Driver, server: TestServer): Promise<void> {
  const deadline = Date.now() + 10_000;
  let dangling = await driver.danglingUploads(server.storageConfig);
  while (dangling.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    dangling = await driver.danglingUploads(server.storageConfig);
  }
  assert.deepEqual(dangling, []);
}
