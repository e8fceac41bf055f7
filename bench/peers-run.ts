/**
 * `npm run bench -- --peers` (or BENCH_PEERS=1): s3ftp against the FTP
 * servers people would pick instead, on one MinIO, doing the same work:
 * `rclone serve ftp` (S3 remote), SFTPGo portable (S3 backend, when
 * SFTPGO_BIN is set), MinIO's own `--ftp`, and direct @aws-sdk calls; then the
 * local driver against vsftpd on the same disk; then many transfers and
 * sessions at once. Rounds are interleaved (every server does round 1 before
 * any does round 2, starting with a different server each round) and medians
 * are reported. Clients are real ones: curl for the big STOR/RETR, Python's
 * ftplib (bench/ftp_client.py) for small files, LIST and the sessions.
 *
 * Sizes: BENCH_FILE_MB (1024), BENCH_BIG_RUNS (3), BENCH_SMALL_FILES (500),
 * BENCH_LIST_OBJECTS (20000), BENCH_CONC_TRANSFERS (32), BENCH_CONC_MB (256),
 * BENCH_CONC_SESSIONS (200), BENCH_CONC_FILES (files per session, 5);
 * BENCH_SMALL_BUDGET_S (30): the most one small-file measurement may take.
 * BENCH_PEER_PHASES picks phases (big,small,list,conc,local; all by default).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { cpuSeconds, resetPeak, rss, TreeRssSampler } from './proc.js';
import {
  minioFtpPeer,
  scratch,
  startMinio,
  startRclone,
  startS3ftp,
  startSftpgo,
  startVsftpd,
  type BenchMinio,
  type FtpPeer,
} from './peers.js';

const MiB = 1024 * 1024;
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const FILE_MB = num('BENCH_FILE_MB', 1024);
const ROUNDS = num('BENCH_BIG_RUNS', 3);
const SMALL_FILES = num('BENCH_SMALL_FILES', 500);
const SMALL_SIZE = 4096;
const LIST_OBJECTS = num('BENCH_LIST_OBJECTS', 20_000);
const CONC_TRANSFERS = num('BENCH_CONC_TRANSFERS', 32);
const CONC_MB = num('BENCH_CONC_MB', 256);
const CONC_SESSIONS = num('BENCH_CONC_SESSIONS', 200);
const CONC_FILES = num('BENCH_CONC_FILES', 5);
const PHASES = new Set((process.env.BENCH_PEER_PHASES ?? 'big,small,list,conc,local').split(','));
/** No server gets more than this for one small-file measurement; its rate is taken over the files it did. */
const BUDGET_S = num('BENCH_SMALL_BUDGET_S', 30);
const SEED_CONCURRENCY = 64;
/** Every bench client comes from 127.0.0.1; s3ftp's default of 50 connections per address would refuse the 200 sessions. */
const S3FTP_EXTRA = { FTP_MAX_CONNECTIONS_PER_IP: String(Math.max(50, 2 * CONC_SESSIONS + 10)), FTP_MAX_CONNECTIONS: String(Math.max(500, 2 * CONC_SESSIONS + 10)) };
const CLIENT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'ftp_client.py');
const REGION = 'us-east-1';

const run = promisify(execFile);
const log = (text: string) => process.stderr.write(`bench: ${text}\n`);
const fmt = (n: number | undefined, digits = 1) => (n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits));

/** A column of the table: an FTP server, or direct SDK calls. */
interface Target {
  name: string;
  peer?: FtpPeer;
  /** Per-run measurements. */
  stor: number[];
  retr: number[];
  small: number[];
  list: number[];
  /** CPU seconds of the server process over the measured work, and of MinIO over the same work. */
  cpu: number;
  minioCpu: number;
  peak: number;
  sampler?: TreeRssSampler;
  conc?: ConcResult;
}

interface ConcResult {
  mbps: number;
  cpu: number;
  minioCpu: number;
  idle: number;
  peak: number;
  filesPerSecond: number;
  sessionCpu: number;
  sessionPeak: number;
  errors: string;
}

interface S3 {
  client: S3Client;
  bucket: string;
}

function target(name: string, peer?: FtpPeer): Target {
  return { name, peer, stor: [], retr: [], small: [], list: [], cpu: 0, minioCpu: 0, peak: 0, sampler: peer ? new TreeRssSampler(peer.pid) : undefined };
}

/** Runs one piece of work, adding the server's and MinIO's CPU to the target's and keeping its peak memory. */
async function measured<T>(t: Target, minio: BenchMinio | undefined, work: () => Promise<T>): Promise<T> {
  const pid = t.peer?.pid;
  t.sampler?.reset();
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const minio0 = minio ? cpuSeconds(minio.pid) : 0;
  const result = await work();
  // A forking server reaps its session processes just after they end.
  if (t.peer?.forks) await new Promise((resolve) => setTimeout(resolve, 200));
  if (pid) t.cpu += cpuSeconds(pid) - cpu0;
  if (minio) t.minioCpu += cpuSeconds(minio.pid) - minio0;
  if (t.sampler) t.peak = Math.max(t.peak, t.sampler.peak());
  return result;
}

function url(peer: FtpPeer, path: string): string {
  return `ftp://${encodeURIComponent(peer.user)}:${encodeURIComponent(peer.password)}@127.0.0.1:${peer.port}${peer.base}/${path}`;
}

async function curl(args: string[]): Promise<number> {
  const started = performance.now();
  await run('curl', ['-sS', '--fail', '--max-time', '1800', ...args], { maxBuffer: MiB });
  return performance.now() - started;
}

async function py(args: string[]): Promise<Record<string, number | string | null>> {
  const { stdout } = await run('python3', [CLIENT, ...args], { maxBuffer: 16 * MiB, timeout: 1800_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, number | string | null>;
}

function pyArgs(peer: FtpPeer): string[] {
  return ['127.0.0.1', String(peer.port), peer.user, peer.password];
}

function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Each round starts with another target, so none is always first or last. */
function rotate<T>(items: T[], round: number): T[] {
  const at = round % items.length;
  return [...items.slice(at), ...items.slice(0, at)];
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const block = randomBytes(MiB);
  let left = bytes;
  await pipeline(
    new Readable({
      read() {
        if (left <= 0) return void this.push(null);
        const chunk = left >= block.length ? block : block.subarray(0, left);
        left -= chunk.length;
        this.push(chunk);
      },
    }),
    createWriteStream(path),
  );
}

function devNull(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}

async function pool<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/** The work of one round for one target. */
async function bigRound(t: Target, s3: S3 | undefined, minio: BenchMinio | undefined, file: string, round: number, what: 'stor' | 'retr'): Promise<void> {
  const name = `w-${slug(t.name)}/big-r${round}.bin`;
  if (t.peer) {
    const peer = t.peer;
    const ms = await measured(t, minio, () =>
      what === 'stor' ? curl(['--ftp-create-dirs', '-T', file, url(peer, name)]) : curl(['-o', '/dev/null', url(peer, name)]),
    );
    t[what].push(FILE_MB / (ms / 1000));
    return;
  }
  const { client, bucket } = s3!;
  const ms = await measured(t, minio, async () => {
    const started = performance.now();
    if (what === 'stor') await new Upload({ client, params: { Bucket: bucket, Key: name, Body: createReadStream(file) } }).done();
    else await pipeline((await client.send(new GetObjectCommand({ Bucket: bucket, Key: name }))).Body as Readable, devNull());
    return performance.now() - started;
  });
  t[what].push(FILE_MB / (ms / 1000));
}

async function smallRound(t: Target, s3: S3 | undefined, minio: BenchMinio | undefined, round: number): Promise<void> {
  const dir = `w-${slug(t.name)}/small-r${round}`;
  if (t.peer) {
    const peer = t.peer;
    const out = await measured(t, minio, () => py(['small', ...pyArgs(peer), `${peer.base}/${dir}`, String(SMALL_FILES), String(SMALL_SIZE), String(BUDGET_S)]));
    if (Number(out.files) < SMALL_FILES) log(`${t.name}: ${out.files} of ${SMALL_FILES} files in the ${BUDGET_S} s budget`);
    t.small.push(Number(out.files) / Number(out.seconds));
    return;
  }
  const { client, bucket } = s3!;
  const body = Buffer.alloc(SMALL_SIZE, 'x');
  const ms = await measured(t, minio, async () => {
    const started = performance.now();
    for (let i = 0; i < SMALL_FILES; i++) await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${dir}/f${i}.bin`, Body: body }));
    return performance.now() - started;
  });
  t.small.push(SMALL_FILES / (ms / 1000));
}

async function listRound(t: Target, s3: S3 | undefined, minio: BenchMinio | undefined): Promise<void> {
  if (t.peer) {
    const peer = t.peer;
    const out = await measured(t, minio, () => py(['list', ...pyArgs(peer), `${peer.base}/list`]));
    if (Number(out.lines) < LIST_OBJECTS) throw new Error(`${t.name}: LIST gave ${out.lines} lines, not ${LIST_OBJECTS}`);
    t.list.push(Number(out.seconds));
    return;
  }
  const { client, bucket } = s3!;
  const ms = await measured(t, minio, async () => {
    const started = performance.now();
    let token: string | undefined;
    let count = 0;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'list/', Delimiter: '/', ContinuationToken: token }));
      count += (page.Contents ?? []).length;
      token = page.NextContinuationToken;
    } while (token);
    if (count !== LIST_OBJECTS) throw new Error(`ListObjectsV2 saw ${count}`);
    return performance.now() - started;
  });
  t.list.push(ms / 1000);
}

function slug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-');
}

/** What failed; the run goes on without that measurement and reports it. */
const failures: string[] = [];

async function attempt(t: Target, what: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    failures.push(`${t.name}, ${what}: ${(err as Error).message.split('\n')[0]}`);
    log(failures.at(-1)!);
  }
}

/** The shared work, rounds interleaved. */
async function compare(targets: Target[], s3: S3 | undefined, minio: BenchMinio | undefined, seedList: () => Promise<void>): Promise<void> {
  const dir = scratch('files');
  const file = join(dir, 'big.bin');
  if (PHASES.has('big')) {
    log(`writing a ${FILE_MB} MiB file`);
    await writeRandomFile(file, FILE_MB * MiB);
  }
  if (PHASES.has('list')) {
    await seedList();
    // MinIO caches a prefix's listing on its first walk: one untimed walk for everyone.
    for (const t of targets) if (!t.peer && s3) await listRound({ ...t, list: [] }, s3, undefined);
  }
  for (let round = 1; round <= ROUNDS; round++) {
    const order = rotate(targets, round - 1);
    if (PHASES.has('big')) {
      for (const what of ['stor', 'retr'] as const) {
        for (const t of order) {
          log(`round ${round}/${ROUNDS}: ${what.toUpperCase()} ${FILE_MB} MiB, ${t.name}`);
          await attempt(t, what.toUpperCase(), () => bigRound(t, s3, minio, file, round, what));
        }
      }
    }
    if (PHASES.has('small')) {
      for (const t of order) {
        log(`round ${round}/${ROUNDS}: ${SMALL_FILES} × 4 KiB, ${t.name}`);
        await attempt(t, 'small files', () => smallRound(t, s3, minio, round));
      }
    }
    if (PHASES.has('list')) {
      for (const t of order) {
        log(`round ${round}/${ROUNDS}: LIST ${LIST_OBJECTS}, ${t.name}`);
        await attempt(t, 'LIST', () => listRound(t, s3, minio));
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

/** CONC_TRANSFERS transfers at once (half STOR, half RETR), then CONC_SESSIONS sessions storing small files at once. */
async function concurrency(t: Target, s3: S3, minio: BenchMinio, file: string): Promise<void> {
  const half = CONC_TRANSFERS >> 1;
  const dir = `w-${slug(t.name)}/conc`;
  const pid = t.peer?.pid;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const idle = pid ? (t.peer!.forks ? t.sampler!.sample() : rss(pid)) : NaN;
  log(`${t.name}: ${CONC_TRANSFERS} × ${CONC_MB} MiB at once (idle RSS ${fmt(idle)} MiB)`);
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const minio0 = cpuSeconds(minio.pid);
  t.sampler?.reset();
  if (pid) resetPeak(pid);
  const started = performance.now();
  if (t.peer) {
    const peer = t.peer;
    await Promise.all([
      ...Array.from({ length: half }, (_, i) => curl(['--ftp-create-dirs', '-T', file, url(peer, `${dir}/up-${i}.bin`)])),
      ...Array.from({ length: CONC_TRANSFERS - half }, () => curl(['-o', '/dev/null', url(peer, 'conc/source.bin')])),
    ]);
  } else {
    const { client, bucket } = s3;
    await Promise.all([
      ...Array.from({ length: half }, (_, i) => new Upload({ client, params: { Bucket: bucket, Key: `${dir}/up-${i}.bin`, Body: createReadStream(file) } }).done()),
      ...Array.from({ length: CONC_TRANSFERS - half }, async () =>
        pipeline((await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'conc/source.bin' }))).Body as Readable, devNull()),
      ),
    ]);
  }
  const seconds = (performance.now() - started) / 1000;
  if (t.peer?.forks) await new Promise((resolve) => setTimeout(resolve, 200));
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN;
  const minioCpu = cpuSeconds(minio.pid) - minio0;
  const peak = t.sampler ? t.sampler.peak() : NaN;

  log(`${t.name}: ${CONC_SESSIONS} sessions × ${CONC_FILES} × 4 KiB at once`);
  const sessionCpu0 = pid ? cpuSeconds(pid) : 0;
  t.sampler?.reset();
  let filesPerSecond: number;
  let errors = '';
  if (t.peer) {
    const out = await py(['sessions', ...pyArgs(t.peer), `${t.peer.base}/${dir}/s`, String(CONC_SESSIONS), String(CONC_FILES), String(SMALL_SIZE), String(BUDGET_S)]);
    filesPerSecond = Number(out.files) / Number(out.seconds);
    if (Number(out.errors) > 0) errors = `${out.errors} sessions failed (${String(out.firstError)})`;
  } else {
    const body = Buffer.alloc(SMALL_SIZE, 'x');
    const begun = performance.now();
    await Promise.all(
      Array.from({ length: CONC_SESSIONS }, async (_, n) => {
        for (let i = 0; i < CONC_FILES; i++) await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `${dir}/s/s${n}/f${i}.bin`, Body: body }));
      }),
    );
    filesPerSecond = (CONC_SESSIONS * CONC_FILES) / ((performance.now() - begun) / 1000);
  }
  t.conc = {
    mbps: (CONC_TRANSFERS * CONC_MB) / seconds,
    cpu,
    minioCpu,
    idle,
    peak,
    filesPerSecond,
    sessionCpu: pid ? cpuSeconds(pid) - sessionCpu0 : NaN,
    sessionPeak: t.sampler ? t.sampler.peak() : NaN,
    errors,
  };
  if (errors) log(`${t.name}: ${errors}`);
}

function table(header: string[], rows: string[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `| --- | ${header.slice(1).map(() => '---:').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

function peerTable(targets: Target[], rounds: number, minioNote: boolean): string {
  const cpuRound = (t: Target) => (t.peer && !(minioNote && t.name === 'MinIO --ftp') ? t.cpu / rounds : undefined);
  const rows: string[][] = [
    [`STOR ${FILE_MB} MiB (MiB/s)`, ...targets.map((t) => fmt(median(t.stor)))],
    [`RETR ${FILE_MB} MiB (MiB/s)`, ...targets.map((t) => fmt(median(t.retr)))],
    ['4 KiB files/s', ...targets.map((t) => fmt(median(t.small)))],
    [`LIST ${LIST_OBJECTS} objects (s)`, ...targets.map((t) => fmt(median(t.list), 2))],
    ['server CPU per round (s)', ...targets.map((t) => fmt(cpuRound(t), 2))],
  ];
  if (minioNote) rows.push(['server + MinIO CPU per round (s)', ...targets.map((t) => fmt((t.name === 'MinIO --ftp' ? t.cpu : t.cpu + t.minioCpu) / rounds, 2))]);
  rows.push(['server peak RSS (MiB)', ...targets.map((t) => (t.peer ? fmt(t.peak) : '—'))]);
  return table(['Measure', ...targets.map((t) => t.name)], rows);
}

function concTable(targets: Target[]): string {
  const withConc = targets.filter((t) => t.conc);
  const c = (t: Target) => t.conc!;
  const own = (t: Target) => t.peer && t.name !== 'MinIO --ftp';
  return table(
    ['Measure', ...withConc.map((t) => t.name)],
    [
      [`${CONC_TRANSFERS} × ${CONC_MB} MiB at once, aggregate (MiB/s)`, ...withConc.map((t) => fmt(c(t).mbps))],
      ['server CPU (s)', ...withConc.map((t) => (own(t) ? fmt(c(t).cpu, 2) : '—'))],
      ['server + MinIO CPU (s)', ...withConc.map((t) => fmt(t.name === 'MinIO --ftp' ? c(t).cpu : (own(t) ? c(t).cpu : 0) + c(t).minioCpu, 2))],
      ['server idle RSS (MiB)', ...withConc.map((t) => (t.peer ? fmt(c(t).idle) : '—'))],
      ['server peak RSS (MiB)', ...withConc.map((t) => (t.peer ? fmt(c(t).peak) : '—'))],
      ['memory per transfer above idle (MiB)', ...withConc.map((t) => (t.peer ? fmt((c(t).peak - c(t).idle) / CONC_TRANSFERS) : '—'))],
      [`${CONC_SESSIONS} sessions × ${CONC_FILES} × 4 KiB, aggregate (files/s)`, ...withConc.map((t) => fmt(c(t).filesPerSecond) + (c(t).errors ? ' (errors)' : ''))],
      ['server CPU, sessions (s)', ...withConc.map((t) => (own(t) ? fmt(c(t).sessionCpu, 2) : '—'))],
      ['server peak RSS, sessions (MiB)', ...withConc.map((t) => (t.peer ? fmt(c(t).sessionPeak) : '—'))],
    ],
  );
}

async function s3Run(minio: BenchMinio, output: string[]): Promise<void> {
  const client = new S3Client({
    endpoint: minio.endpoint,
    region: REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
  });
  const bucket = `bench-${randomBytes(4).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  const s3 = { client, bucket };
  // Everything the servers read is in place before they start: rclone caches
  // a directory's listing (--dir-cache-time, 5 min) and would not see later objects.
  if (PHASES.has('list')) {
    log(`seeding ${LIST_OBJECTS} objects to list`);
    await pool(
      Array.from({ length: LIST_OBJECTS }, (_, i) => `list/object-${String(i).padStart(7, '0')}`),
      SEED_CONCURRENCY,
      (Key) => client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: 'x' })),
    );
  }
  const concDir = scratch('conc');
  const concFile = join(concDir, 'conc.bin');
  if (PHASES.has('conc')) {
    log(`writing a ${CONC_MB} MiB file and its object`);
    await writeRandomFile(concFile, CONC_MB * MiB);
    await new Upload({ client, params: { Bucket: bucket, Key: 'conc/source.bin', Body: createReadStream(concFile) } }).done();
  }
  const peers: FtpPeer[] = [];
  let targets: Target[] = [];
  try {
    peers.push(
      await startS3ftp(
        { S3_BUCKET: bucket, S3_ENDPOINT: minio.endpoint, S3_REGION: REGION, AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey },
        S3FTP_EXTRA,
      ),
    );
    peers.push(await startRclone(minio, bucket));
    const sftpgo = await startSftpgo(minio, bucket).catch((err: unknown) => {
      log(`SFTPGo skipped: ${(err as Error).message}`);
      return undefined;
    });
    if (sftpgo) peers.push(sftpgo);
    else if (!process.env.SFTPGO_BIN) log('SFTPGo skipped: set SFTPGO_BIN to an sftpgo binary to include it');
    peers.push(minioFtpPeer(minio, bucket));
    for (const p of peers) log(`${p.name} on port ${p.port} (pid ${p.pid}), RSS ${fmt(rss(p.pid))} MiB`);
    targets = [...peers.map((p) => target(p.name, p)), target('direct SDK')];
    await compare(targets, s3, minio, async () => undefined);
    if (['big', 'small', 'list'].some((p) => PHASES.has(p))) {
      output.push(`### S3: s3ftp and its peers on one MinIO (${ROUNDS} rounds, medians)`, '', peerTable(targets, ROUNDS, true), '');
    }
    if (PHASES.has('conc')) {
      for (const t of targets) {
        await concurrency(t, s3, minio, concFile).catch((err: unknown) => {
          failures.push(`${t.name}, concurrency: ${(err as Error).message.split('\n')[0]}`);
          log(failures.at(-1)!);
        });
      }
      output.push(`### Concurrency: ${CONC_TRANSFERS} transfers (half STOR, half RETR), then ${CONC_SESSIONS} sessions`, '', concTable(targets), '');
    }
  } finally {
    for (const t of targets) t.sampler?.stop();
    for (const p of peers) await p.stop().catch(() => undefined);
    rmSync(concDir, { recursive: true, force: true });
  }
}

async function localRun(output: string[]): Promise<void> {
  const ours = scratch('local-s3ftp');
  const theirs = scratch('local-vsftpd');
  const peers: FtpPeer[] = [];
  try {
    mkdirSync(join(ours, 'pub'));
    peers.push(await startS3ftp({ DATA_DIR: ours }, S3FTP_EXTRA, 's3ftp (local)'));
    try {
      peers.push(await startVsftpd(theirs));
    } catch (err) {
      log(`vsftpd skipped: ${(err as Error).message}`);
      output.push(`vsftpd could not run here: ${(err as Error).message.split('\n')[0]}`, '');
    }
    const targets = peers.map((p) => target(p.name, p));
    const seedList = async () => {
      log(`writing ${LIST_OBJECTS} files to list, for each server`);
      for (const root of [ours, theirs]) {
        mkdirSync(join(root, 'pub', 'list'), { recursive: true });
        for (let i = 0; i < LIST_OBJECTS; i++) writeFileSync(join(root, 'pub', 'list', `object-${String(i).padStart(7, '0')}`), 'x');
      }
    };
    await compare(targets, undefined, undefined, seedList);
    output.push(`### Local driver and vsftpd, same disk (${ROUNDS} rounds, medians)`, '', peerTable(targets, ROUNDS, false), '');
    for (const t of targets) t.sampler?.stop();
  } finally {
    for (const p of peers) await p.stop().catch(() => undefined);
  }
}

/** Runs the peer comparison and prints its tables (markdown) on stdout. */
export async function peersBench(): Promise<void> {
  const output: string[] = [];
  const minio = await startMinio();
  const started = performance.now();
  try {
    log(`MinIO ${minio.endpoint} (pid ${minio.pid}), its FTP on port ${minio.ftpPort}`);
    await s3Run(minio, output);
  } catch (err) {
    process.stdout.write(output.join('\n'));
    throw err;
  } finally {
    await minio.stop();
  }
  if (PHASES.has('local')) await localRun(output);
  if (failures.length > 0) output.push('Failed (left out of the medians):', '', ...failures.map((f) => `- ${f}`), '');
  output.push(
    `Sizes: BENCH_FILE_MB=${FILE_MB} BENCH_BIG_RUNS=${ROUNDS} BENCH_SMALL_FILES=${SMALL_FILES} BENCH_LIST_OBJECTS=${LIST_OBJECTS} ` +
      `BENCH_CONC_TRANSFERS=${CONC_TRANSFERS} BENCH_CONC_MB=${CONC_MB} BENCH_CONC_SESSIONS=${CONC_SESSIONS} BENCH_CONC_FILES=${CONC_FILES}; ` +
      `${((performance.now() - started) / 60_000).toFixed(1)} min.`,
    '',
  );
  process.stdout.write(output.join('\n'));
}
