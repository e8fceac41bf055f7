/**
 * The servers `npm run bench -- --peers` compares s3ftp with, each started as
 * a child on 127.0.0.1 and stopped when the bench ends (on error and on
 * SIGINT/SIGTERM too): MinIO with its own `--ftp`, `rclone serve ftp` on an
 * S3 remote, SFTPGo portable (when SFTPGO_BIN is set), vsftpd for the local
 * driver. The pinned binaries come from scripts/build-*.sh.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { childEnv, MAIN, nodeFlags, startServerProcess } from '../test/helpers/process.js';

const run = promisify(execFile);
const SCRIPTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts');
const BUILD_TIMEOUT_MS = 30 * 60_000;
const START_TIMEOUT_MS = 60_000;
const REGION = 'us-east-1';

/** An FTP server under test. Paths given to it are FTP paths below `base`. */
export interface FtpPeer {
  name: string;
  port: number;
  /** The process whose CPU and memory are the server's. */
  pid: number;
  /** vsftpd: its sessions are child processes, counted in its tree. */
  forks: boolean;
  user: string;
  password: string;
  /** The FTP path of the bucket root (MinIO's FTP lists buckets at /), or of the shared local directory. */
  base: string;
  stop(): Promise<void>;
}

/** The bench's MinIO, started here so it can carry its FTP server; S3 access for everyone else. */
export interface BenchMinio {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  pid: number;
  ftpPort: number;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
const dirs: string[] = [];

function cleanup(): void {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.once('exit', cleanup);
// Exiting (not re-raising the signal) runs every 'exit' handler, the one
// that stops the s3ftp child (test/helpers/process.ts) included.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => process.exit(128 + constants.signals[signal]));
}

/** A temporary directory removed when the bench ends. */
export function scratch(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `s3ftp-bench-${label}-`));
  dirs.push(dir);
  return dir;
}

function track(child: ChildProcess, name: string): () => string {
  children.add(child);
  let tail = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (text: string) => (tail = (tail + text).slice(-4096)));
  }
  child.once('exit', () => children.delete(child));
  child.once('error', (err) => (tail += `\n${name}: ${err.message}`));
  return () => tail;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

let nextRange = 20_000 + Math.floor(Math.random() * 20) * 1000;
/** A passive port range of its own for each server: 1,000 ports, so random picks for 232 connections at once rarely collide. */
function passiveRange(): [number, number] {
  const start = nextRange;
  nextRange += 1000;
  return [start, start + 999];
}

/** Resolves once something on `port` answers 220; rejects when `child` exits first or after the timeout. */
async function waitFtp(port: number, child: ChildProcess, output: () => string, name: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}): ${output()}`);
    if (await greets(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${name} did not answer on port ${port}: ${output()}`);
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(), 2_000);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (/^220[ ]/m.test(text)) {
        socket.end('QUIT\r\n');
        clearTimeout(timer);
        resolve(true);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** What a peer is besides its process: where it listens and who logs in. */
type PeerLogin = Pick<FtpPeer, 'name' | 'port' | 'user' | 'password' | 'base'> & { forks?: boolean };

/** Spawns a peer's server, stopped when the bench ends; resolves once it greets with 220 on `login.port`. */
async function spawnPeer(binary: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd: string }, login: PeerLogin): Promise<FtpPeer> {
  const child = spawn(binary, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = track(child, login.name);
  await waitFtp(login.port, child, output, login.name);
  return { forks: false, ...login, pid: child.pid!, stop: () => stopChild(child) };
}

/** Runs scripts/<script> (a no-op once built) and returns the binary path it prints last. */
export async function buildBinary(script: string): Promise<string> {
  const { stdout } = await run('bash', [join(SCRIPTS, script)], { timeout: BUILD_TIMEOUT_MS, maxBuffer: 16 << 20 });
  const binary = stdout.trim().split('\n').pop();
  if (!binary) throw new Error(`${script} printed no path`);
  return binary;
}

/**
 * MinIO (the pinned build) on one drive in a temp directory, with its
 * built-in FTP server on: `--ftp="address=127.0.0.1:PORT"
 * --ftp="passive-port-range=A-B"`. FTP users are MinIO's own credentials.
 */
export async function startMinio(): Promise<BenchMinio> {
  const binary = await buildBinary('build-minio.sh');
  const accessKeyId = `bench${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(18).toString('hex');
  const data = scratch('minio');
  const [port, consolePort, ftpPort] = [await freePort(), await freePort(), await freePort()];
  const [low, high] = passiveRange();
  const child = spawn(
    binary,
    [
      'server', data, '--quiet',
      '--address', `127.0.0.1:${port}`,
      '--console-address', `127.0.0.1:${consolePort}`,
      `--ftp=address=127.0.0.1:${ftpPort}`,
      `--ftp=passive-port-range=${low}-${high}`,
    ],
    {
      env: { ...childEnv({}), MINIO_ROOT_USER: accessKeyId, MINIO_ROOT_PASSWORD: secretAccessKey, MINIO_BROWSER: 'off', MINIO_UPDATE: 'off' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const output = track(child, 'minio');
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`MinIO did not start: ${output()}`);
    const live = await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
    if (live) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await waitFtp(ftpPort, child, output, 'MinIO --ftp');
  return { endpoint, accessKeyId, secretAccessKey, pid: child.pid!, ftpPort, stop: () => stopChild(child) };
}

/** MinIO's own FTP server as a peer: the bucket is a directory below /. */
export function minioFtpPeer(minio: BenchMinio, bucket: string): FtpPeer {
  return {
    name: 'MinIO --ftp',
    port: minio.ftpPort,
    pid: minio.pid,
    forks: false,
    user: minio.accessKeyId,
    password: minio.secretAccessKey,
    base: `/${bucket}`,
    stop: async () => undefined, // stopped with MinIO
  };
}

/**
 * s3ftp as users start it: node with the bin's flags and default settings,
 * rooted at the bucket (S3) or at `dataDir` (local). `extra` is for the one
 * setting a run needs beyond the defaults (the per-address connection limit,
 * since every bench client comes from 127.0.0.1).
 */
export async function startS3ftp(storage: Record<string, string>, extra: Record<string, string>, name = 's3ftp'): Promise<FtpPeer> {
  const user = 'bench';
  const password = randomBytes(12).toString('hex');
  const server = await startServerProcess(
    childEnv({ ...storage, FTP_PORT: '0', FTP_USER: user, FTP_PASSWORD: password, ...extra }),
    { args: [...nodeFlags(), MAIN] },
  );
  return {
    name,
    port: server.port,
    pid: server.child.pid!,
    forks: false,
    user,
    password,
    base: storage.S3_BUCKET ? '' : '/pub',
    stop: async () => void (await server.stop()),
  };
}

/** `rclone serve ftp` on an S3 remote configured for the bench MinIO (rclone's defaults otherwise: no VFS cache). */
export async function startRclone(minio: BenchMinio, bucket: string): Promise<FtpPeer> {
  const binary = await buildBinary('build-rclone.sh');
  const dir = scratch('rclone');
  const config = join(dir, 'rclone.conf');
  writeFileSync(
    config,
    [
      '[bench]',
      'type = s3',
      'provider = Minio',
      'env_auth = false',
      `access_key_id = ${minio.accessKeyId}`,
      `secret_access_key = ${minio.secretAccessKey}`,
      `endpoint = ${minio.endpoint}`,
      `region = ${REGION}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const port = await freePort();
  const [low, high] = passiveRange();
  const user = 'bench';
  const password = randomBytes(12).toString('hex');
  return spawnPeer(
    binary,
    [
      'serve', 'ftp', `bench:${bucket}`,
      '--config', config,
      '--addr', `127.0.0.1:${port}`,
      '--passive-port', `${low}-${high}`,
      '--public-ip', '127.0.0.1',
      '--user', user,
      '--pass', password,
      '--log-level', 'ERROR',
    ],
    { env: childEnv({ RCLONE_CONFIG: config }), cwd: dir },
    { name: 'rclone serve ftp', port, user, password, base: '' },
  );
}

/**
 * SFTPGo portable with its S3 backend, when SFTPGO_BIN names a binary
 * (undefined otherwise). Flags as documented for `sftpgo portable`; the
 * binding address and passive range come through SFTPGo's SFTPGO_* variables.
 */
export async function startSftpgo(minio: BenchMinio, bucket: string): Promise<FtpPeer | undefined> {
  const binary = process.env.SFTPGO_BIN;
  if (!binary) return undefined;
  const dir = scratch('sftpgo');
  const port = await freePort();
  const [low, high] = passiveRange();
  const user = 'bench';
  const password = randomBytes(12).toString('hex');
  return spawnPeer(
    binary,
    [
      'portable',
      '--directory', dir,
      '--ftpd-port', String(port),
      '--sftpd-port', '-1',
      '--username', user,
      '--password', password,
      '--permissions', '*',
      '--fs-provider', 's3fs',
      '--s3-bucket', bucket,
      '--s3-region', REGION,
      '--s3-endpoint', minio.endpoint,
      '--s3-access-key', minio.accessKeyId,
      '--s3-access-secret', minio.secretAccessKey,
      '--s3-force-path-style',
      '--log-file-path', join(dir, 'sftpgo.log'),
    ],
    {
      env: childEnv({
        SFTPGO_FTPD__BINDINGS__0__ADDRESS: '127.0.0.1',
        SFTPGO_FTPD__BINDINGS__0__PORT: String(port),
        SFTPGO_FTPD__PASSIVE_PORT_RANGE__START: String(low),
        SFTPGO_FTPD__PASSIVE_PORT_RANGE__END: String(high),
        // As for s3ftp: the concurrency phase's 200 sessions all come from 127.0.0.1 (default: 20 per host).
        SFTPGO_COMMON__MAX_PER_HOST_CONNECTIONS: '0',
      }),
      cwd: dir,
    },
    { name: 'SFTPGo', port, user, password, base: '' },
  );
}

/** vsftpd on the path, installing the Debian package when it is missing (only the peers bench asks). */
async function vsftpdBinary(): Promise<string> {
  for (const path of ['/usr/sbin/vsftpd', '/sbin/vsftpd']) if (existsSync(path)) return path;
  process.stderr.write('bench: installing vsftpd (apt-get install vsftpd)\n');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['install', '-y', '--no-install-recommends', 'vsftpd'], { env, maxBuffer: 16 << 20 }).catch(async () => {
    await run('apt-get', ['update'], { env, maxBuffer: 16 << 20 });
    await run('apt-get', ['install', '-y', '--no-install-recommends', 'vsftpd'], { env, maxBuffer: 16 << 20 });
  });
  return '/usr/sbin/vsftpd';
}

/**
 * vsftpd in the foreground with a generated config: loopback only, anonymous
 * login with upload, mkdir and overwrite into `<root>/pub` (a local user
 * would need a system account and PAM; root is refused by /etc/ftpusers).
 * Its sessions are forked processes, so CPU counts its waited-for children
 * and memory is the tree's. The root must not be writable by the ftp user.
 */
export async function startVsftpd(root: string): Promise<FtpPeer> {
  const binary = await vsftpdBinary();
  const dir = scratch('vsftpd');
  const empty = join(dir, 'empty');
  mkdirSync(empty, { mode: 0o755 });
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'pub'), { recursive: true });
  chmodSync(join(root, 'pub'), 0o777);
  const port = await freePort();
  const [low, high] = passiveRange();
  const config = join(dir, 'vsftpd.conf');
  writeFileSync(
    config,
    [
      'listen=YES',
      'listen_ipv6=NO',
      'listen_address=127.0.0.1',
      `listen_port=${port}`,
      'background=NO',
      'run_as_launching_user=NO',
      'anonymous_enable=YES',
      'local_enable=NO',
      'no_anon_password=YES',
      `anon_root=${root}`,
      'write_enable=YES',
      'anon_upload_enable=YES',
      'anon_mkdir_write_enable=YES',
      'anon_other_write_enable=YES',
      'anon_umask=022',
      'anon_world_readable_only=NO',
      'pasv_enable=YES',
      `pasv_min_port=${low}`,
      `pasv_max_port=${high}`,
      'pasv_address=127.0.0.1',
      `secure_chroot_dir=${empty}`,
      'seccomp_sandbox=NO',
      'isolate=NO',
      'isolate_network=NO',
      'xferlog_enable=NO',
      'dirmessage_enable=NO',
      'max_clients=0',
      'max_per_ip=0',
      'idle_session_timeout=600',
      'data_connection_timeout=600',
      '',
    ].join('\n'),
  );
  return spawnPeer(binary, [config], { env: childEnv({}), cwd: dir }, { name: 'vsftpd', port, forks: true, user: 'anonymous', password: 'bench@', base: '/pub' });
}
