import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { ConfigError, int, type Env } from './env.js';
import { loadExternalAuthConfig, type ExternalAuthConfig } from '../auth/external.js';
import { parseUsersFile, type User } from '../auth/users.js';
import { combineUsers, type UsersFileConfig } from '../auth/users-source.js';
import { loadBandwidthConfig, type BandwidthConfig } from '../data/throttle.js';
import { loadEventsConfig, type EventsConfig } from '../events/config.js';
import { BUCKET_NAME, homeToStoragePath } from '../paths.js';
import { storageProblem } from '../storage/storages.js';
import { checkTlsPolicy, DEFAULT_CIPHERS, DEFAULT_MIN_VERSION, TLS_MIN_VERSIONS, type TlsMinVersion } from '../server/tls.js';

/** A configuration problem; the message names the variable at fault. */
export { ConfigError } from './env.js';

export interface LocalStorageConfig {
  kind: 'local';
  /** Absolute directory that is the storage root. */
  dataDir: string;
}

export interface S3StorageConfig {
  kind: 's3';
  bucket: string;
  /** Key prefix that is the storage root ('' or ending without '/'). */
  prefix: string;
  /** Other buckets users' mounts may name (`s3://bucket/prefix`), S3_EXTRA_BUCKETS. */
  extraBuckets?: readonly string[];
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  /** Explicit credentials; otherwise the AWS default chain (environment, profile, role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Multipart part size in bytes; memory per upload is about partSize × (queueSize + 1). */
  partSize: number;
  queueSize: number;
  /** Deadline for one S3 request, in ms. */
  requestTimeoutMs: number;
  /** Parallel server-side object copies in a directory rename (driver default 16). */
  renameConcurrency?: number;
  /** Objects above this many bytes are copied with parallel UploadPartCopy (driver default 256 MiB). */
  multipartCopyThreshold?: number;
}

export type StorageConfig = LocalStorageConfig | S3StorageConfig;

export interface Config {
  host: string;
  port: number;
  /** Passive ports to listen on; undefined means any free port. */
  pasvPorts?: { min: number; max: number };
  /** Address advertised in PASV replies; default: the control connection's local address. */
  pasvAddress?: string;
  users: User[];
  /** Set when no user was configured and one was made up at start. */
  generatedPassword?: string;
  /**
   * FTP_USERS_FILE (or the secret FTP_USERS_SECRET_ID names), re-read on SIGHUP
   * and every FTP_USERS_RELOAD_SECONDS; undefined without one (FTP_USERS_JSON
   * alone and FTP_USER: read at start only).
   */
  usersFile?: UsersFileConfig;
  storage: StorageConfig;
  logLevel: string;
  logPretty: boolean;
  /** Idle control connections are closed after this many ms of waiting for a command (not while one runs). */
  idleTimeoutMs: number;
  /** A connection that has not logged in this many ms after it opened is closed; bytes do not extend it. */
  loginTimeoutMs: number;
  /**
   * After an upload's data connection ends, how long to wait for the control
   * connection to close too before the upload is published: a dying client's
   * two connections close a few ms apart, in either order.
   */
  uploadSettleMs: number;
  /** A data connection must be opened, and must move bytes, within this many ms. */
  dataTimeoutMs: number;
  /** Longest accepted command line in bytes. */
  maxCommandBytes: number;
  /**
   * Upload leftovers (local temp files, S3 multipart uploads) older than this
   * are removed at start and every hour: what a crashed server left. Longer
   * than the longest upload of any instance sharing the storage.
   */
  sweepAgeMs: number;
  /** On SIGTERM, how long running transfers may take to finish before they are aborted. */
  shutdownGraceMs: number;
  /** FTPS (RFC 4217); undefined when no certificate is configured. */
  ftps?: FtpsConfig;
  limits: LimitsConfig;
  /** The control listeners take a PROXY protocol header (v1 or v2) first and drop connections without one. Default false. */
  proxyProtocol?: boolean;
  /** The HTTP port of /healthz, /readyz and /metrics; off when undefined. */
  health?: { host: string; port: number };
  /** FTP_LEGACY_ENCODING: the code page of clients that do not send UTF-8 (src/encoding.ts); undefined: such names get 553. */
  legacyEncoding?: import('../encoding.js').LegacyEncoding;
  /** File events POSTed to EVENTS_URL; off when undefined. */
  events?: EventsConfig;
  /** Identity provider asked for names not defined locally (FTP_AUTH_URL); off when undefined. */
  externalAuth?: ExternalAuthConfig;
  /** Per-transfer bandwidth limits (FTP_UPLOAD_KIBPS, FTP_DOWNLOAD_KIBPS). */
  bandwidth?: BandwidthConfig;
}

export interface FtpsConfig {
  /** PEM certificate chain and key, read at start. */
  cert: Buffer;
  key: Buffer;
  /** Port of the implicit-FTPS listener (TLS from the first byte); none when undefined. */
  implicitPort?: number;
  /** Refuse USER/PASS on a connection that has not done AUTH TLS (per-user override in the users file). */
  requireTlsLogin: boolean;
  /** Refuse transfers unless PROT P is in effect (per-user override in the users file). */
  requireProtP: boolean;
  /** A data connection's TLS session must resume the control connection's (vsftpd's require_ssl_reuse). */
  requireSessionReuse: boolean;
  /** A protected upload must end with the client's TLS close_notify, not a bare FIN (vsftpd's strict_ssl_read_eof). */
  requireCloseNotify: boolean;
  /** OpenSSL cipher list, TLS 1.3 suites included, in the server's order of preference; default DEFAULT_CIPHERS. */
  ciphers?: string;
  /** Oldest TLS version accepted; default TLSv1.2. */
  minVersion?: TlsMinVersion;
}

export interface LimitsConfig {
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** Failed logins from one address within the window that lock it out. */
  maxLoginFailures: number;
  loginFailureWindowMs: number;
  lockoutMs: number;
  /** Delay after a failed login, times the address's recent failures (capped at 5 s). */
  failedLoginDelayMs: number;
}


const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Reads the configuration from environment variables. Throws ConfigError with
 * one message naming the variable at fault; never returns a half-valid config.
 */
export function loadConfig(env: Env = process.env): Config {
  const users = loadUsers(env);
  const storage = loadStorage(env);
  for (const user of users.users) {
    const problem = storageProblem(storage, user);
    if (problem) throw new ConfigError(`user "${user.name}": ${problem}`);
  }
  return {
    host: host(env, 'FTP_HOST', '127.0.0.1'),
    port: int(env, 'FTP_PORT', 2121, 0, 65535),
    pasvPorts: portRange(env, 'FTP_PASV_PORTS'),
    pasvAddress: optionalIPv4(env, 'FTP_PASV_ADDRESS'),
    users: users.users,
    generatedPassword: users.generatedPassword,
    usersFile: users.usersFile,
    storage,
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS),
    logPretty: bool(env, 'LOG_PRETTY', false),
    idleTimeoutMs: int(env, 'FTP_IDLE_TIMEOUT', 300, 1, 86400) * 1000,
    loginTimeoutMs: int(env, 'FTP_LOGIN_TIMEOUT', 60, 1, 3600) * 1000,
    uploadSettleMs: int(env, 'FTP_UPLOAD_SETTLE_MS', 10, 0, 1000),
    dataTimeoutMs: int(env, 'FTP_DATA_TIMEOUT', 60, 1, 86400) * 1000,
    maxCommandBytes: int(env, 'FTP_MAX_COMMAND_BYTES', 4096, 512, 65536),
    shutdownGraceMs: int(env, 'FTP_SHUTDOWN_GRACE', 30, 0, 3600) * 1000,
    sweepAgeMs: int(env, 'STORAGE_SWEEP_AGE_HOURS', 24, 1, 8760) * 3600_000,
    ftps: loadFtps(env),
    proxyProtocol: bool(env, 'FTP_PROXY_PROTOCOL', false),
    legacyEncoding: (oneOf(env, 'FTP_LEGACY_ENCODING', '', ['latin1', 'cp1252', 'cp437']) || undefined) as Config['legacyEncoding'],
    health: env.HEALTH_PORT?.trim()
      ? { host: host(env, 'HEALTH_HOST', '127.0.0.1'), port: int(env, 'HEALTH_PORT', 0, 0, 65535) }
      : undefined,
    events: loadEventsConfig(env),
    externalAuth: loadExternalAuthConfig(env),
    bandwidth: loadBandwidthConfig(env),
    limits: {
      maxConnections: int(env, 'FTP_MAX_CONNECTIONS', 500, 1, 100000),
      maxConnectionsPerAddress: int(env, 'FTP_MAX_CONNECTIONS_PER_IP', 50, 1, 100000),
      maxLoginFailures: int(env, 'FTP_MAX_LOGIN_FAILURES', 10, 1, 1000),
      loginFailureWindowMs: int(env, 'FTP_LOGIN_FAILURE_WINDOW', 300, 1, 86400) * 1000,
      lockoutMs: int(env, 'FTP_LOCKOUT_SECONDS', 900, 1, 86400) * 1000,
      failedLoginDelayMs: int(env, 'FTP_LOGIN_DELAY_MS', 500, 0, 5000),
    },
  };
}

function loadFtps(env: Env): FtpsConfig | undefined {
  const certFile = env.FTPS_CERT_FILE?.trim();
  const keyFile = env.FTPS_KEY_FILE?.trim();
  if (!certFile && !keyFile) {
    if (env.FTPS_IMPLICIT_PORT?.trim()) throw new ConfigError('FTPS_IMPLICIT_PORT: needs FTPS_CERT_FILE and FTPS_KEY_FILE');
    return undefined;
  }
  if (!certFile) throw new ConfigError('FTPS_CERT_FILE: must be set when FTPS_KEY_FILE is');
  if (!keyFile) throw new ConfigError('FTPS_KEY_FILE: must be set when FTPS_CERT_FILE is');
  const read = (file: string, variable: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`${variable}: cannot read ${file}: ${(err as Error).message}`);
    }
  };
  const implicit = env.FTPS_IMPLICIT_PORT?.trim() ? int(env, 'FTPS_IMPLICIT_PORT', 990, 0, 65535) : undefined;
  return {
    cert: read(certFile, 'FTPS_CERT_FILE'),
    key: read(keyFile, 'FTPS_KEY_FILE'),
    implicitPort: implicit,
    // Secure by default, as vsftpd's force_local_logins_ssl and force_local_data_ssl.
    requireTlsLogin: bool(env, 'FTPS_REQUIRE_TLS', true),
    requireProtP: bool(env, 'FTPS_REQUIRE_PROT_P', true),
    requireSessionReuse: bool(env, 'FTPS_REQUIRE_SESSION_REUSE', true),
    requireCloseNotify: bool(env, 'FTPS_REQUIRE_CLOSE_NOTIFY', true),
    ...tlsPolicy(env),
  };
}

function tlsPolicy(env: Env): Pick<FtpsConfig, 'ciphers' | 'minVersion'> {
  const raw = env.FTPS_MIN_VERSION?.trim();
  const minVersion = raw ? TLS_MIN_VERSIONS.find((v) => v.toLowerCase() === raw.toLowerCase()) : DEFAULT_MIN_VERSION;
  if (!minVersion) throw new ConfigError(`FTPS_MIN_VERSION: "${raw}" is not one of ${TLS_MIN_VERSIONS.join(', ')}`);
  const ciphers = env.FTPS_CIPHERS?.trim() || DEFAULT_CIPHERS;
  const problem = checkTlsPolicy(ciphers, minVersion);
  if (problem) throw new ConfigError(`FTPS_CIPHERS: "${ciphers}": ${problem}`);
  return { ciphers, minVersion };
}

function loadStorage(env: Env): StorageConfig {
  if (!env.S3_BUCKET?.trim() && env.S3_EXTRA_BUCKETS?.trim()) throw new ConfigError('S3_EXTRA_BUCKETS: needs S3_BUCKET');
  const bucket = env.S3_BUCKET?.trim();
  if (!bucket) {
    return { kind: 'local', dataDir: resolve(env.DATA_DIR?.trim() || './data') };
  }
  if (!BUCKET_NAME.test(bucket)) {
    throw new ConfigError(`S3_BUCKET: "${bucket}" is not a valid bucket name`);
  }
  const extraBuckets = (env.S3_EXTRA_BUCKETS ?? '').split(',').map((b) => b.trim()).filter((b) => b !== '');
  const invalid = extraBuckets.find((b) => !BUCKET_NAME.test(b));
  if (invalid !== undefined) throw new ConfigError(`S3_EXTRA_BUCKETS: "${invalid}" is not a valid bucket name`);
  const endpoint = env.S3_ENDPOINT?.trim() || undefined;
  if (endpoint !== undefined) {
    // The endpoint is printed (check-config) and logged, so a refusal never quotes it: it may hold
    // credentials, which go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    const url = URL.parse(endpoint);
    if (url && (url.username !== '' || url.password !== '')) {
      throw new ConfigError('S3_ENDPOINT: a user or password in the URL is not allowed; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new ConfigError('S3_ENDPOINT: not an http(s) URL');
  }
  return {
    kind: 's3',
    bucket,
    prefix: homeToStoragePathOrThrow(env.S3_PREFIX ?? '', 'S3_PREFIX'),
    extraBuckets,
    endpoint,
    region: env.S3_REGION?.trim() || env.AWS_REGION?.trim() || 'us-east-1',
    forcePathStyle: bool(env, 'S3_FORCE_PATH_STYLE', endpoint !== undefined),
    ...staticCredentials(env),
    partSize: int(env, 'S3_PART_SIZE_MB', 8, 5, 5120) * 1024 * 1024,
    queueSize: int(env, 'S3_QUEUE_SIZE', 2, 1, 64),
    requestTimeoutMs: int(env, 'S3_REQUEST_TIMEOUT', 30, 1, 3600) * 1000,
    renameConcurrency: int(env, 'S3_RENAME_CONCURRENCY', 16, 1, 256),
    multipartCopyThreshold: int(env, 'S3_MULTIPART_COPY_THRESHOLD_MB', 256, 5, 5120) * 1024 * 1024,
  };
}

/**
 * Keys given as settings (which may come from the config file, where the AWS
 * SDK would not look); otherwise the SDK's default chain finds credentials.
 */
function staticCredentials(env: Env): Pick<S3StorageConfig, 'credentials'> {
  const accessKeyId = env.AWS_ACCESS_KEY_ID?.trim();
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY?.trim();
  if (!accessKeyId || !secretAccessKey) return {};
  return { credentials: { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN?.trim() || undefined } };
}

/** Default FTP_USERS_RELOAD_SECONDS: a changed users file is in force within this many seconds. */
const USERS_RELOAD_SECONDS = 30;

function loadUsers(env: Env): { users: User[]; generatedPassword?: string; usersFile?: UsersFileConfig } {
  const file = env.FTP_USERS_FILE?.trim();
  const inline = env.FTP_USERS_JSON?.trim();
  const name = env.FTP_USER?.trim();
  const password = env.FTP_PASSWORD;
  const fromSource: User[] = [];
  if (file && inline) throw new ConfigError('FTP_USERS_JSON: set FTP_USERS_FILE or FTP_USERS_JSON, not both');
  if (inline) {
    // The users file's content itself, for platforms that hand secrets over as variables (ECS, Kubernetes).
    try {
      fromSource.push(...parseUsersFile(inline));
    } catch (err) {
      throw new ConfigError(`FTP_USERS_JSON: ${(err as Error).message}`);
    }
  }
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`FTP_USERS_FILE: cannot read ${file}: ${(err as Error).message}`);
    }
    try {
      fromSource.push(...parseUsersFile(text));
    } catch (err) {
      throw new ConfigError(`FTP_USERS_FILE: ${file}: ${(err as Error).message}`);
    }
  }
  const fixed: User[] = [];
  if (name !== undefined || password !== undefined) {
    if (!name) throw new ConfigError('FTP_USER: must be set when FTP_PASSWORD is');
    if (!password) throw new ConfigError('FTP_PASSWORD: must be set when FTP_USER is');
    fixed.push({ name, password: { kind: 'plain', value: password }, home: '' });
  }
  let users: User[];
  try {
    // The rule a re-read of the file applies too (src/auth/users-source.ts).
    users = combineUsers(fromSource, fixed, inline ? 'FTP_USERS_JSON' : 'FTP_USERS_FILE');
  } catch (err) {
    throw new ConfigError(`FTP_USER: ${(err as Error).message}`);
  }
  const secretId = env.FTP_USERS_SECRET_ID?.trim() || undefined;
  if (secretId !== undefined && !inline) throw new ConfigError('FTP_USERS_SECRET_ID: needs FTP_USERS_JSON, the same secret\'s value at start');
  if (!file && !secretId) return { users };
  // Read only with something to re-read, so a config file that sets it without one is told it has no effect.
  const reloadMs = int(env, 'FTP_USERS_RELOAD_SECONDS', USERS_RELOAD_SECONDS, 0, 86400) * 1000;
  if (secretId !== undefined) return { users, usersFile: { path: `secretsmanager:${secretId}`, secretId, reloadMs, fixed } };
  return { users, usersFile: { path: resolve(file!), reloadMs, fixed } };
}

function homeToStoragePathOrThrow(value: string, variable: string): string {
  try {
    return homeToStoragePath(value);
  } catch (err) {
    throw new ConfigError(`${variable}: ${(err as Error).message}`);
  }
}


function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (!raw) return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(`${name}: "${raw}" is not true or false`);
}

function oneOf(env: Env, name: string, fallback: string, allowed: string[]): string {
  const raw = env[name]?.trim().toLowerCase();
  if (!raw) return fallback;
  if (!allowed.includes(raw)) throw new ConfigError(`${name}: "${raw}" is not one of ${allowed.join(', ')}`);
  return raw;
}

function host(env: Env, name: string, fallback: string): string {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (isIP(raw) === 0) throw new ConfigError(`${name}: "${raw}" is not an IP address`);
  return raw;
}

function optionalIPv4(env: Env, name: string): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  if (isIP(raw) !== 4) throw new ConfigError(`${name}: "${raw}" is not an IPv4 address`);
  return raw;
}

function portRange(env: Env, name: string): { min: number; max: number } | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const m = /^(\d+)\s*-\s*(\d+)$/.exec(raw);
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1024 || max > 65535 || min > max) {
    throw new ConfigError(`${name}: "${raw}" is not a port range such as 30000-30100 (ports 1024-65535)`);
  }
  return { min, max };
}

