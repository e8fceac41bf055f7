/**
 * npm run bench: the gateway against direct @aws-sdk calls on the same MinIO,
 * in the same run. Starts MinIO (the test harness's) and s3ftp as a child
 * process with default settings, so the server's resident memory is its own.
 * Prints a markdown table. Sizes: BENCH_FILE_MB, BENCH_SMALL_FILES,
 * BENCH_LIST_OBJECTS, BENCH_RENAME_OBJECTS; BENCH_PHASES picks phases
 * (comma-separated: big,small,list,rename; all by default).
 * BENCH_NODE_FLAGS (space-separated) replaces the bin's node flags, for A/B runs only.
 * With --peers or BENCH_PEERS=1, runs bench/peers-run.ts instead.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Client } from 'basic-ftp';
import { RawFtp } from '../test/helpers/ftp.js';
import { getS3, type S3TestEnv } from '../test/helpers/minio.js';
import { childEnv, MAIN, nodeFlags, s3Settings, startServerProcess, type ServerProcess } from '../test/helpers/process.js';
import { tempDir } from '../test/helpers/server.js';
import { cpuSeconds } from './proc.js';
import { RssSampler } from './rss.js';

const MiB = 1024 * 1024;
const FILE_MB = Number(process.env.BENCH_FILE_MB ?? 1024);
const SMALL_FILES = Number(process.env.BENCH_SMALL_FILES ?? 1000);
const LIST_OBJECTS = Number(process.env.BENCH_LIST_OBJECTS ?? 100_000);
const LIST_RUNS = 3;
const BIG_RUNS = Number(process.env.BENCH_BIG_RUNS ?? 3);
const RENAME_OBJECTS = Number(process.env.BENCH_RENAME_OBJECTS ?? 10_000);
const PHASES = new Set((process.env.BENCH_PHASES ?? 'big,small,list,rename').split(','));
/** The slow reader of RETR: curl --limit-rate for a bounded time. */
const SLOW_RATE_MB = 8;
const SLOW_SECONDS = 20;
/** The server's default S3_RENAME_CONCURRENCY, used for the direct rename too. */
const RENAME_CONCURRENCY = 16;
const SEED_CONCURRENCY = 64;
const USER = 'bench';
const PASSWORD = randomBytes(12).toString('hex');
const PREFIX = `bench-${Date.now()}`;
const RSS_TARGET_MIB = 160;

const run = promisify(execFile);

interface Row {
  measure: string;
  gateway: string;
  direct: string;
  ratio: string;
  target: string;
  met: string;
}

const rows: Row[] = [];
const log = (text: string) => process.stderr.write(`bench: ${text}\n`);
const seconds = (ms: number) => (ms / 1000).toFixed(2);
const fmt = (n: number, digits = 1) => n.toFixed(digits);

async function main(): Promise<void> {
  const env = await getS3();
  if (!env) throw new Error('MinIO is not available (scripts/build-minio.sh needs Go)');
  // Started as the bin, the image and `npm start` start it (test/deploy.test.ts keeps their flags the same).
  const server = await startServerProcess(
    childEnv({ ...s3Settings(env, PREFIX), FTP_PORT: '0', FTP_USER: USER, FTP_PASSWORD: PASSWORD, ...JSON.parse(process.env.BENCH_SERVER_ENV ?? '{}') }),
    { args: [...(process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? nodeFlags()), MAIN] },
  );
  const rss = new RssSampler(server.child.pid!);
  try {
    log(`MinIO ${env.endpoint}, s3ftp on port ${server.port} (pid ${server.child.pid}), idle RSS ${fmt(rss.now())} MiB`);
    if (PHASES.has('big')) await bigFile(env, server, rss);
    if (PHASES.has('small')) await smallFiles(env, server);
    if (PHASES.has('list')) await bigListing(env, server, rss);
    if (PHASES.has('rename')) await bigRename(env, server, rss);
    rows.push(rssRow('the whole run', rss.highWater()));
  } finally {
    rss.stop();
    await server.stop();
    print();
  }
}

const yes = (ok: boolean) => (ok ? 'yes' : '**no**');

/** STOR and RETR of one big file, against Upload and GetObject. */
async function bigFile(env: S3TestEnv, server: ServerProcess, rss: RssSampler): Promise<void> {
  const dir = tempDir('s3ftp-bench-');
  const file = join(dir, 'big.bin');
  log(`writing a ${FILE_MB} MiB file`);
  await pipeline(randomStream(FILE_MB * MiB), createWriteStream(file));
  const url = `ftp://${USER}:${PASSWORD}@127.0.0.1:${server.port}`;
  const times = { stor: [] as number[], upload: [] as number[], retr: [] as number[], get: [] as number[] };
  let storPeak = 0;
  let retrPeak = 0;
  const cpu = { stor: 0, retr: 0 };
  const pid = server.child.pid!;
  try {
    for (let round = 1; round <= BIG_RUNS; round++) {
      log(`STOR through the gateway (curl -T), then direct Upload (lib-storage, default part size and queue) (${round} of ${BIG_RUNS})`);
      rss.reset();
      let cpu0 = cpuSeconds(pid);
      times.stor.push(await timed(() => run('curl', ['-sS', '--fail', '-T', file, `${url}/big.bin`], { maxBuffer: MiB })));
      cpu.stor += cpuSeconds(pid) - cpu0;
      storPeak = Math.max(storPeak, rss.peak());
      times.upload.push(
        await timed(() => new Upload({ client: env.client, params: { Bucket: env.bucket, Key: `${PREFIX}-direct/big.bin`, Body: createReadStream(file) } }).done()),
      );
      log(`RETR through the gateway (curl), then direct GetObject (${round} of ${BIG_RUNS})`);
      rss.reset();
      cpu0 = cpuSeconds(pid);
      times.retr.push(await timed(() => run('curl', ['-sS', '--fail', '-o', '/dev/null', `${url}/big.bin`], { maxBuffer: MiB })));
      cpu.retr += cpuSeconds(pid) - cpu0;
      retrPeak = Math.max(retrPeak, rss.peak());
      times.get.push(
        await timed(async () => {
          const out = await env.client.send(new GetObjectCommand({ Bucket: env.bucket, Key: `${PREFIX}-direct/big.bin` }));
          await pipeline(out.Body as Readable, devNull());
        }),
      );
    }
    log(`RETR through the gateway to a reader at ${SLOW_RATE_MB} MiB/s for ${SLOW_SECONDS} s (curl --limit-rate)`);
    rss.reset();
    const slow = await run('curl', ['-sS', '--limit-rate', `${SLOW_RATE_MB}M`, '--max-time', String(SLOW_SECONDS), '-o', '/dev/null', '-w', '%{size_download}', `${url}/big.bin`], { maxBuffer: MiB }).catch(
      (err: { code?: number; stdout?: string }) => {
        if (err.code !== 28) throw err; // 28: stopped by --max-time, as meant
        return { stdout: err.stdout ?? '0' };
      },
    );
    const slowPeak = rss.peak();
    log(`the slow reader got ${fmt(Number(slow.stdout) / MiB)} MiB`);
    const mbps = (ms: number[]) => FILE_MB / (median(ms) / 1000);
    for (const [name, gateway, direct, peak] of [
      ['STOR', times.stor, times.upload, storPeak],
      ['RETR', times.retr, times.get, retrPeak],
    ] as const) {
      const ratio = mbps(gateway) / mbps(direct);
      rows.push({ measure: `${name} ${FILE_MB} MiB, median of ${BIG_RUNS} (MiB/s)`, gateway: fmt(mbps(gateway)), direct: fmt(mbps(direct)), ratio: fmt(ratio, 2), target: '≥ 0.90', met: yes(ratio >= 0.9) });
      rows.push(rssRow(name, peak));
      const perGiB = cpu[name === 'STOR' ? 'stor' : 'retr'] / BIG_RUNS / (FILE_MB / 1024);
      rows.push({ measure: `Server CPU during ${name} (s per GiB)`, gateway: fmt(perGiB, 2), direct: '', ratio: '', target: '', met: '' });
    }
    rows.push(rssRow(`RETR to a reader at ${SLOW_RATE_MB} MiB/s (${SLOW_SECONDS} s)`, slowPeak));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Many small STORs over one session, against sequential PutObject. */
async function smallFiles(env: S3TestEnv, server: ServerProcess): Promise<void> {
  const body = randomBytes(4096);
  log(`${SMALL_FILES} × 4 KiB STOR over one session (basic-ftp)`);
  const client = new Client(60_000);
  await client.access({ host: '127.0.0.1', port: server.port, user: USER, password: PASSWORD });
  await client.ensureDir('/small');
  const gateway = await timed(async () => {
    for (let i = 0; i < SMALL_FILES; i++) await client.uploadFrom(Readable.from([body]), `f${i}.bin`);
  });
  client.close();
  log(`${SMALL_FILES} × 4 KiB sequential PutObject`);
  const direct = await timed(async () => {
    for (let i = 0; i < SMALL_FILES; i++) {
      await env.client.send(new PutObjectCommand({ Bucket: env.bucket, Key: `${PREFIX}-direct/small/f${i}.bin`, Body: body }));
    }
  });
  const perSecond = (ms: number) => SMALL_FILES / (ms / 1000);
  rows.push({ measure: `${SMALL_FILES} × 4 KiB files (files/s)`, gateway: fmt(perSecond(gateway)), direct: fmt(perSecond(direct)), ratio: fmt(perSecond(gateway) / perSecond(direct), 2), target: '', met: '' });
}

/**
 * LIST of a huge directory: time to first byte and total, against raw
 * ListObjectsV2 paging. MinIO caches a listing on its first walk of a prefix,
 * so an untimed walk comes first, then gateway and raw runs alternate and the
 * medians are reported.
 */
async function bigListing(env: S3TestEnv, server: ServerProcess, rss: RssSampler): Promise<void> {
  log(`seeding ${LIST_OBJECTS} objects`);
  await seed(env.client, env.bucket, `${PREFIX}/huge`, LIST_OBJECTS);
  await rawListing(env);
  const gateway: Timing[] = [];
  const raw: Timing[] = [];
  rss.reset();
  for (let run = 1; run <= LIST_RUNS; run++) {
    log(`LIST through the gateway, then raw ListObjectsV2 paging (${run} of ${LIST_RUNS})`);
    gateway.push(await gatewayListing(server));
    raw.push(await rawListing(env));
  }
  const peak = rss.peak();
  const firstByte = median(gateway.map((t) => t.firstByte));
  const total = median(gateway.map((t) => t.total));
  const rawFirst = median(raw.map((t) => t.firstByte));
  const rawTotal = median(raw.map((t) => t.total));
  rows.push({ measure: `LIST ${LIST_OBJECTS} objects, first byte (s)`, gateway: seconds(firstByte), direct: seconds(rawFirst), ratio: fmt(firstByte / rawFirst, 2), target: '', met: '' });
  rows.push({ measure: `LIST ${LIST_OBJECTS} objects, total (s)`, gateway: seconds(total), direct: seconds(rawTotal), ratio: fmt(total / rawTotal, 2), target: '≤ 1.20', met: yes(total / rawTotal <= 1.2) });
  rows.push(rssRow('LIST', peak));
}

interface Timing {
  firstByte: number;
  total: number;
}

async function gatewayListing(server: ServerProcess): Promise<Timing> {
  const ftp = await RawFtp.login(server.port, USER, PASSWORD);
  const started = performance.now();
  const data = await ftp.passive();
  await ftp.expect('LIST huge', 150);
  let firstByte = 0;
  let lines = 0;
  data.on('data', (chunk: Buffer) => {
    firstByte ||= performance.now() - started;
    for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines++;
  });
  await once(data, 'close');
  const reply = await ftp.read(600_000);
  const total = performance.now() - started;
  ftp.close();
  if (reply.code !== 226 || lines !== LIST_OBJECTS) throw new Error(`LIST: ${reply.code}, ${lines} lines`);
  return { firstByte, total };
}

async function rawListing(env: S3TestEnv): Promise<Timing> {
  let firstByte = 0;
  const started = performance.now();
  let token: string | undefined;
  let count = 0;
  do {
    const page = await env.client.send(new ListObjectsV2Command({ Bucket: env.bucket, Prefix: `${PREFIX}/huge/`, Delimiter: '/', ContinuationToken: token }));
    firstByte ||= performance.now() - started;
    count += (page.Contents ?? []).length;
    token = page.NextContinuationToken;
  } while (token);
  const total = performance.now() - started;
  if (count !== LIST_OBJECTS) throw new Error(`ListObjectsV2 saw ${count}`);
  return { firstByte, total };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** RNFR/RNTO of a directory of many objects, against CopyObject + DeleteObjects at the same concurrency. */
async function bigRename(env: S3TestEnv, server: ServerProcess, rss: RssSampler): Promise<void> {
  log(`seeding 2 × ${RENAME_OBJECTS} objects`);
  await seed(env.client, env.bucket, `${PREFIX}/tree`, RENAME_OBJECTS);
  await seed(env.client, env.bucket, `${PREFIX}-direct/tree`, RENAME_OBJECTS);
  const ftp = await RawFtp.login(server.port, USER, PASSWORD);
  log('RNFR/RNTO through the gateway');
  rss.reset();
  const gateway = await timed(async () => {
    await ftp.expect('RNFR tree', 350);
    ftp.socket.write('RNTO moved\r\n');
    const reply = await ftp.read(600_000);
    if (reply.code !== 250) throw new Error(`RNTO: ${reply.code} ${reply.text}`);
  }).catch(async (err: unknown) => {
    ftp.close();
    throw err;
  });
  ftp.close();
  const peak = rss.peak();
  log('direct CopyObject + DeleteObjects');
  const direct = await timed(async () => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await env.client.send(new ListObjectsV2Command({ Bucket: env.bucket, Prefix: `${PREFIX}-direct/tree/`, ContinuationToken: token }));
      keys.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.NextContinuationToken;
    } while (token);
    await pool(keys, RENAME_CONCURRENCY, (key) =>
      env.client.send(new CopyObjectCommand({ Bucket: env.bucket, Key: key.replace('/tree/', '/moved/'), CopySource: `${env.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}` })),
    );
    for (let i = 0; i < keys.length; i += 1000) {
      await env.client.send(new DeleteObjectsCommand({ Bucket: env.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
    }
  });
  rows.push({ measure: `Rename a directory of ${RENAME_OBJECTS} objects (s)`, gateway: seconds(gateway), direct: seconds(direct), ratio: fmt(gateway / direct, 2), target: '', met: '' });
  rows.push(rssRow('the rename', peak));
}

function rssRow(during: string, peak: number): Row {
  return { measure: `Server peak RSS during ${during} (MiB)`, gateway: fmt(peak), direct: '', ratio: '', target: `≤ ${RSS_TARGET_MIB}`, met: yes(peak <= RSS_TARGET_MIB) };
}

/** Puts `count` small objects under `prefix/` with many requests in flight. */
async function seed(client: S3Client, bucket: string, prefix: string, count: number): Promise<void> {
  const body = Buffer.from('x');
  const names = Array.from({ length: count }, (_, i) => `${prefix}/object-${String(i).padStart(7, '0')}`);
  await pool(names, SEED_CONCURRENCY, (Key) => client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body })));
}

async function pool<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

function randomStream(bytes: number): Readable {
  const block = randomBytes(MiB);
  let left = bytes;
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const chunk = left >= block.length ? block : block.subarray(0, left);
      left -= chunk.length;
      this.push(chunk);
    },
  });
}

function devNull(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}

function print(): void {
  const header: Row = { measure: 'Measure', gateway: 's3ftp', direct: 'direct SDK', ratio: 'ratio', target: 'target', met: 'met' };
  const line = (r: Row) => `| ${r.measure} | ${r.gateway} | ${r.direct} | ${r.ratio} | ${r.target} | ${r.met} |`;
  process.stdout.write(
    [
      line(header),
      '| --- | ---: | ---: | ---: | --- | --- |',
      ...rows.map(line),
      '',
      `MinIO and s3ftp on loopback; s3ftp with default settings (8 MiB parts, 2 in flight, rename concurrency ${RENAME_CONCURRENCY}); RSS of the whole s3ftp process, sampled every 20 ms.`,
      '',
    ].join('\n'),
  );
}

if (process.argv.includes('--peers') || process.env.BENCH_PEERS === '1') {
  const { peersBench } = await import('./peers-run.js');
  await peersBench();
} else {
  await main();
}
