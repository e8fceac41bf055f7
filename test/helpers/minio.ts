import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import type { S3StorageConfig } from '../../src/config/index.js';

export interface S3TestEnv {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  client: S3Client;
}

const REGION = 'us-east-1';
const START_TIMEOUT_MS = 60_000;
/** A cold build of MinIO takes several minutes. */
const BUILD_TIMEOUT_MS = 30 * 60_000;
/** This file runs as dist/test/helpers/minio.js, three levels below the repository root. */
const BUILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'scripts', 'build-minio.sh');

let env: Promise<S3TestEnv | undefined> | undefined;
/** Data directory of the MinIO this process started, if it started one. */
let ownDataDir: string | undefined;

/**
 * Starts (once per process) a real MinIO on 127.0.0.1 on a free port with a temp
 * data dir (or uses S3_TEST_ENDPOINT + S3_TEST_ACCESS_KEY/S3_TEST_SECRET_KEY when
 * set), creates a fresh bucket for this run, returns env. Returns undefined when
 * MinIO cannot be had and CI is not set (tests then skip with a visible reason);
 * when process.env.CI is set, failure to get MinIO throws — never a skip.
 */
export function getS3(): Promise<S3TestEnv | undefined> {
  env ??= connect().catch((err: unknown) => {
    if (process.env.CI) throw err;
    process.stderr.write(`S3 tests skipped: ${(err as Error).message}\n`);
    return undefined;
  });
  return env;
}

/** S3StorageConfig for a fresh, unique prefix in the run's bucket (so test files don't see each other's objects). */
export function s3StorageConfig(env: S3TestEnv, prefix: string): S3StorageConfig {
  return {
    kind: 's3',
    bucket: env.bucket,
    prefix: `${prefix}-${randomBytes(4).toString('hex')}`,
    endpoint: env.endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    // The S3 minimum, so tests reach multipart uploads with small bodies.
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
    requestTimeoutMs: 30_000,
  };
}

/** An S3 config whose endpoint nothing listens on (port 9): every request fails fast with a connection error. */
export function unreachableS3Config(bucket = 'unreachable'): S3StorageConfig {
  return {
    kind: 's3',
    bucket,
    prefix: '',
    endpoint: 'http://127.0.0.1:9',
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'x', secretAccessKey: 'y' },
    partSize: 5 * 1024 * 1024,
    queueSize: 1,
    requestTimeoutMs: 2000,
  };
}

/**
 * Lists in-progress multipart uploads under a prefix (for "no dangling upload" assertions).
 * MinIO lists uploads only for an exact key, never by prefix, so on the harness's own
 * MinIO this reports every upload in its data directory instead: stricter, never weaker
 * (each test file has its own MinIO, and its tests run one at a time).
 */
export async function listMultipartUploads(env: S3TestEnv, prefix: string): Promise<string[]> {
  if (ownDataDir !== undefined) return uploadsOnDisk(ownDataDir);
  const keys: string[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  do {
    const page = await env.client.send(
      new ListMultipartUploadsCommand({ Bucket: env.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
    );
    for (const upload of page.Uploads ?? []) keys.push(`${upload.Key ?? ''} (${upload.UploadId ?? ''})`);
    keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
    uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
  } while (keyMarker);
  return keys;
}

/** MinIO keeps each upload in .minio.sys/multipart/<sha256(bucket/key)>/<upload>/. */
async function uploadsOnDisk(dataDir: string): Promise<string[]> {
  const root = join(dataDir, '.minio.sys', 'multipart');
  const uploads: string[] = [];
  for (const object of await readdir(root).catch(() => [])) {
    for (const upload of await readdir(join(root, object)).catch(() => [])) uploads.push(`${object}/${upload}`);
  }
  return uploads;
}

async function connect(): Promise<S3TestEnv> {
  const external = process.env.S3_TEST_ENDPOINT;
  const server = external
    ? {
        endpoint: external,
        accessKeyId: required('S3_TEST_ACCESS_KEY'),
        secretAccessKey: required('S3_TEST_SECRET_KEY'),
      }
    : await startMinio();
  const client = new S3Client({
    endpoint: server.endpoint,
    region: REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestHandler: { requestTimeout: 30_000, throwOnRequestTimeout: true, connectionTimeout: 5_000 },
  });
  const bucket = `s3ftp-test-${randomBytes(6).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  // A MinIO of our own dies with the process; on a shared endpoint, remove what we made.
  if (external) process.once('beforeExit', () => void removeBucket(client, bucket).catch(() => undefined));
  return { ...server, region: REGION, bucket, client };
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set when S3_TEST_ENDPOINT is`);
  return value;
}

async function startMinio(): Promise<{ endpoint: string; accessKeyId: string; secretAccessKey: string }> {
  const binary = await minioBinary();
  // The free port may be taken by someone else before MinIO binds it; try again then.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(binary);
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function launch(binary: string): Promise<{ endpoint: string; accessKeyId: string; secretAccessKey: string }> {
  const accessKeyId = `test${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(18).toString('hex');
  const dataDir = mkdtempSync(join(tmpdir(), 's3ftp-minio-'));
  const [port, consolePort] = [await freePort(), await freePort()];
  const settings = { binary, dataDir, port, consolePort, accessKeyId, secretAccessKey };
  const spec: MinioProcess = { ...settings, ...spawnMinio(settings) };
  const cleanup = registerCleanup(spec);
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitLive(endpoint, spec.child);
  } catch (err) {
    cleanup();
    throw new Error(`MinIO did not start: ${(err as Error).message}\n${spec.output()}`);
  }
  own = spec;
  ownDataDir = dataDir;
  return { endpoint, accessKeyId, secretAccessKey };
}

/** How the MinIO this process started runs: enough to start it again on the same port and data. */
interface MinioSettings {
  binary: string;
  dataDir: string;
  port: number;
  consolePort: number;
  accessKeyId: string;
  secretAccessKey: string;
}

interface MinioProcess extends MinioSettings {
  child: ChildProcess;
  /** The tail of its output, for error messages. */
  output: () => string;
}

let own: MinioProcess | undefined;

function spawnMinio(spec: MinioSettings): { child: ChildProcess; output: () => string } {
  const child = spawn(
    spec.binary,
    ['server', spec.dataDir, '--quiet', '--address', `127.0.0.1:${spec.port}`, '--console-address', `127.0.0.1:${spec.consolePort}`],
    {
      env: {
        ...process.env,
        MINIO_ROOT_USER: spec.accessKeyId,
        MINIO_ROOT_PASSWORD: spec.secretAccessKey,
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const output = keepTail(child);
  // Neither MinIO nor its pipes may keep the test process alive.
  child.unref();
  return { child, output };
}

/**
 * Fault injection: kills the harness's own MinIO (SIGKILL, as a crash would),
 * keeping its data. Throws when the tests run against an external endpoint.
 */
export async function stopMinio(): Promise<void> {
  if (!own) throw new Error('stopMinio needs the MinIO the harness started (not S3_TEST_ENDPOINT)');
  const { child } = own;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Starts the stopped MinIO again on the same address, credentials and data, and waits until it is live. */
export async function restartMinio(): Promise<void> {
  if (!own) throw new Error('restartMinio needs the MinIO the harness started (not S3_TEST_ENDPOINT)');
  const spec = own;
  // The port was ours a moment ago; if a lingering socket holds it, try again briefly.
  for (let attempt = 1; ; attempt++) {
    Object.assign(spec, spawnMinio(spec));
    try {
      await waitLive(`http://127.0.0.1:${spec.port}`, spec.child);
      return;
    } catch (err) {
      spec.child.kill('SIGKILL');
      if (attempt >= 3) throw new Error(`MinIO did not restart: ${(err as Error).message}\n${spec.output()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Runs scripts/build-minio.sh (a no-op once built) and returns the binary path it prints last. */
async function minioBinary(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('bash', [BUILD_SCRIPT], { timeout: BUILD_TIMEOUT_MS, maxBuffer: 16 << 20 });
    const binary = stdout.trim().split('\n').pop();
    if (!binary) throw new Error('build-minio.sh printed no path');
    return binary;
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '').trim().split('\n').slice(-5).join('\n');
    throw new Error(`cannot build MinIO with ${BUILD_SCRIPT}: ${(err as Error).message.split('\n')[0]}\n${stderr}`);
  }
}

/** Keeps the last few KB of MinIO's output for error messages, and drains the pipes. */
function keepTail(child: ChildProcess): () => string {
  let tail = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (text: string) => {
      tail = (tail + text).slice(-4096);
    });
    (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }
  return () => tail;
}

/** Kills MinIO (whichever process it is now) and removes its data when the process ends (or right away, via the returned function). */
function registerCleanup(spec: MinioProcess): () => void {
  const cleanup = (): void => {
    spec.child.kill('SIGKILL');
    rmSync(spec.dataDir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  // A signal skips 'exit'; clean up, then die of the same signal as we would have.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanup();
      process.kill(process.pid, signal);
    });
  }
  return cleanup;
}

async function waitLive(endpoint: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`minio exited (${child.exitCode ?? child.signalCode})`);
    }
    try {
      const res = await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no answer from ${endpoint}/minio/health/live within ${START_TIMEOUT_MS / 1000} s`);
}

/** A port that was free a moment ago; MinIO binds it right after. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function removeBucket(client: S3Client, bucket: string): Promise<void> {
  for (const upload of (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []) {
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }));
  }
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    const objects = (page.Contents ?? []).map((o) => ({ Key: o.Key }));
    if (objects.length > 0) await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects } }));
    token = page.NextContinuationToken;
  } while (token);
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}
