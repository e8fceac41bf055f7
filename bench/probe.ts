/**
 * A focused A/B probe of the 4 KiB STOR path, for changes to it:
 *
 *   node dist/bench/probe.js
 *
 * Starts the bench's MinIO, puts a counting HTTP proxy in front of it, and
 * then, per round, every variant in turn (rounds interleaved): a fresh
 * server started as the bin starts it, PROBE_FILES STORs of 4 KiB over one
 * ftplib session, step by step (bench/ftp_client.py `phases`). Prints, per
 * variant, the median files/s over PROBE_ROUNDS rounds, the median time of
 * each FTP step, and the S3 requests per file as the proxy saw them.
 *
 *   PROBE_VARIANTS  JSON [{ "name", "main"?: path of a dist/src/main.js, "env"?: {...}, "flags"?: [node flags] }]
 *                   (default: this build, once)
 *   PROBE_RCLONE=1  adds `rclone serve ftp` (scripts/build-rclone.sh) as a variant
 *   PROBE_DRIVER    s3 (default) or local (then no proxy; DATA_DIR per variant)
 *   PROBE_FILES (200), PROBE_ROUNDS (5), PROBE_SIZE (4096), PROBE_WARMUP (50 files first, untimed)
 *   PROBE_BIG_MB    instead: STOR then RETR of one file of this many MiB with curl,
 *                   per variant and round: MiB/s, server CPU s per GiB and peak RSS (from
 *                   the RSS at its start, so a RETR's includes what the STOR left)
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { childEnv, MAIN, nodeFlags, startServerProcess } from '../test/helpers/process.js';
import { startS3Proxy, type S3Proxy } from '../test/helpers/s3-proxy.js';
import { scratch, startMinio, startRclone, type BenchMinio } from './peers.js';
import { cpuSeconds } from './proc.js';
import { RssSampler } from './rss.js';

const run = promisify(execFile);
const CLIENT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'ftp_client.py');
const FILES = Number(process.env.PROBE_FILES ?? 200);
const ROUNDS = Number(process.env.PROBE_ROUNDS ?? 5);
const SIZE = Number(process.env.PROBE_SIZE ?? 4096);
const DRIVER = process.env.PROBE_DRIVER ?? 's3';
const BUCKET = 'probe';
const WARMUP = Number(process.env.PROBE_WARMUP ?? 50);

interface Variant {
  name: string;
  main?: string;
  env?: Record<string, string>;
  /** Node flags instead of the bin's (`[]` for none). */
  flags?: string[];
  rclone?: boolean;
}

interface Result {
  seconds: number;
  files: number;
  medianMs: Record<string, number>;
  /** Server CPU (user + system) per file, ms. */
  cpuMs?: number;
  /** Of which in the kernel (stime), ms. */
  sysMs?: number;
}

/** S3 requests by operation, as the proxy in front of MinIO sees them: what each server asks of it. */
class CountingProxy {
  #connections = 0;

  private constructor(
    private readonly proxy: S3Proxy,
    private readonly counts: Map<string, number>,
  ) {}

  static async start(target: string): Promise<CountingProxy> {
    const counts = new Map<string, number>();
    const proxy = await startS3Proxy(target, ({ operation }) => {
      counts.set(operation, (counts.get(operation) ?? 0) + 1);
      return 'forward';
    });
    return new CountingProxy(proxy, counts);
  }

  get endpoint(): string {
    return this.proxy.endpoint;
  }

  /** The counts since the last take, with the TCP connections opened to S3 (keep-alive reuse shows there). */
  take(): Map<string, number> {
    const taken = new Map(this.counts);
    this.counts.clear();
    taken.set('(new TCP connections)', this.proxy.connections - this.#connections);
    this.#connections = this.proxy.connections;
    return taken;
  }

  close(): Promise<void> {
    return this.proxy.close();
  }
}

/** Kernel CPU seconds (stime) of a process. */
function systemSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds by thread name (summed over threads of one name). */
function threadTimes(pid: number): Map<string, number> {
  const times = new Map<string, number>();
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return times;
  }
  for (const task of tasks) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      times.set(name, (times.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // the thread ended
    }
  }
  return times;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const BIG_MB = Number(process.env.PROBE_BIG_MB ?? 0);

/** STOR and RETR of one big file with curl: MiB/s and server CPU seconds per GiB. */
async function big(server: Started, file: string): Promise<Record<string, number>> {
  const url = `ftp://${server.user}:${server.password}@127.0.0.1:${server.port}/big.bin`;
  const out: Record<string, number> = {};
  for (const [name, args] of [
    ['stor', ['-sS', '--fail', '-T', file, url]],
    ['retr', ['-sS', '--fail', '-o', '/dev/null', url]],
  ] as const) {
    const cpu0 = cpuSeconds(server.pid);
    const rss = new RssSampler(server.pid);
    rss.reset();
    const started = performance.now();
    await run('curl', [...args], { maxBuffer: 1 << 20 });
    const seconds = (performance.now() - started) / 1000;
    out[`${name} MiB/s`] = BIG_MB / seconds;
    out[`${name} CPU s/GiB`] = ((cpuSeconds(server.pid) - cpu0) * 1024) / BIG_MB;
    out[`${name} peak RSS MiB`] = rss.peak();
    rss.stop();
  }
  return out;
}

async function bigMain(variants: Variant[], minio: BenchMinio | undefined, proxy: CountingProxy | undefined): Promise<void> {
  const file = join(scratch('probe-big'), 'big.bin');
  const block = Buffer.alloc(1 << 20);
  const fd = openSync(file, 'w');
  for (let i = 0; i < BIG_MB; i++) writeSync(fd, randomFillSync(block));
  closeSync(fd);
  const results = new Map<string, Array<Record<string, number>>>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (let i = 0; i < variants.length; i++) {
      const variant = variants[(i + round - 1) % variants.length]!;
      const server = await start(variant, minio, proxy);
      try {
        proxy?.take();
        const r = await big(server, file);
        if (proxy) requests.set(variant.name, proxy.take());
        results.set(variant.name, [...(results.get(variant.name) ?? []), r]);
        process.stderr.write(`probe: round ${round} ${variant.name}: ${JSON.stringify(r)}\n`);
      } finally {
        await server.stop();
      }
    }
  }
  const keys = ['stor MiB/s', 'stor CPU s/GiB', 'stor peak RSS MiB', 'retr MiB/s', 'retr CPU s/GiB', 'retr peak RSS MiB'];
  const lines = [`STOR then RETR of ${BIG_MB} MiB with curl, ${DRIVER}, ${ROUNDS} rounds interleaved, medians`, ''];
  lines.push(`| variant | ${keys.join(' | ')} | S3 requests (last round) |`, `| --- | ${keys.map(() => '---:').join(' | ')} | --- |`);
  for (const variant of variants) {
    const rs = results.get(variant.name) ?? [];
    const counts = [...(requests.get(variant.name) ?? new Map<string, number>())].map(([op, n]) => `${op} ${n}`).join(', ');
    lines.push(`| ${variant.name} | ${keys.map((k) => `${median(rs.map((r) => r[k] ?? 0)).toFixed(k.includes('CPU') ? 2 : 1)} (${rs.map((r) => (r[k] ?? 0).toFixed(1)).join(', ')})`).join(' | ')} | ${counts} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

const requests = new Map<string, Map<string, number>>();

async function main(): Promise<void> {
  const variants: Variant[] = JSON.parse(process.env.PROBE_VARIANTS ?? '[{"name":"this build"}]');
  if (process.env.PROBE_RCLONE === '1') variants.push({ name: 'rclone serve ftp', rclone: true });
  const minio = DRIVER === 's3' ? await startMinio() : undefined;
  let proxy: CountingProxy | undefined;
  if (minio) {
    const client = new S3Client({
      endpoint: minio.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
    });
    await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
    client.destroy();
    // The proxy carries every byte: for big transfers, PROBE_PROXY=0 leaves it out.
    if (process.env.PROBE_PROXY !== '0') {
      proxy = await CountingProxy.start(minio.endpoint);
    }
  }
  if (BIG_MB > 0) {
    await bigMain(variants, minio, proxy);
    await proxy?.close();
    await minio?.stop();
    return;
  }
  const results = new Map<string, Result[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    // Each round starts with the next variant, so none always runs first.
    for (let i = 0; i < variants.length; i++) {
      const variant = variants[(i + round - 1) % variants.length]!;
      const dir = `/r${round}-${variant.name.replace(/\W+/g, '-')}`;
      const server = await start(variant, minio, proxy);
      try {
        // Warm-up on the same server, untimed: a long-running server has its JIT and sockets warm.
        if (WARMUP > 0) {
          await run('python3', [CLIENT, 'small', '127.0.0.1', String(server.port), server.user, server.password, `${dir}-warm`, String(WARMUP), String(SIZE), '600'], { maxBuffer: 1 << 20 });
        }
        const threads0 = threadTimes(server.pid);
        proxy?.take();
        const cpu0 = cpuSeconds(server.pid);
        const sys0 = systemSeconds(server.pid);
        const { stdout } = await run('python3', [CLIENT, 'phases', '127.0.0.1', String(server.port), server.user, server.password, dir, String(FILES), String(SIZE)], {
          maxBuffer: 1 << 20,
        });
        const result = JSON.parse(stdout) as Result;
        result.cpuMs = ((cpuSeconds(server.pid) - cpu0) * 1000) / result.files;
        result.sysMs = ((systemSeconds(server.pid) - sys0) * 1000) / result.files;
        const threads = threadTimes(server.pid);
        const busy = [...threads].map(([name, t]) => [name, t - (threads0.get(name) ?? 0)] as const).filter(([, t]) => t > 0);
        if (proxy) requests.set(variant.name, proxy.take());
        results.set(variant.name, [...(results.get(variant.name) ?? []), result]);
        process.stderr.write(`probe: round ${round} ${variant.name}: ${(result.files / result.seconds).toFixed(1)} files/s, ${result.cpuMs.toFixed(2)} ms CPU/file (${result.sysMs.toFixed(2)} system; by thread, s: ${busy.map(([n, t]) => `${n} ${t.toFixed(2)}`).join(', ')}) ${JSON.stringify(result.medianMs)}\n`);
      } finally {
        await server.stop();
      }
    }
  }
  await proxy?.close();
  await minio?.stop();
  const lines = [`${FILES} × ${SIZE} B STOR over one ftplib session, ${DRIVER}, ${ROUNDS} rounds interleaved, medians`, ''];
  const steps = ['type', 'pasv', 'stor150', 'send', 'reply226', 'file'];
  lines.push(`| variant | files/s (median) | files/s (all) | server CPU ms/file | ${steps.map((s) => `${s} ms`).join(' | ')} | S3 requests per file |`);
  lines.push(`| --- | ---: | --- | ---: | ${steps.map(() => '---:').join(' | ')} | --- |`);
  for (const variant of variants) {
    const rs = results.get(variant.name) ?? [];
    const rates = rs.map((r) => r.files / r.seconds);
    const perStep = steps.map((s) => median(rs.map((r) => r.medianMs[s] ?? 0)).toFixed(2));
    const counts = [...(requests.get(variant.name) ?? new Map<string, number>())]
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([op, n]) => `${op} ${(n / FILES).toFixed(2)}`)
      .join(', ');
    const cpu = `${median(rs.map((r) => r.cpuMs ?? 0)).toFixed(2)} (${median(rs.map((r) => r.sysMs ?? 0)).toFixed(2)} sys)`;
    lines.push(`| ${variant.name} | ${median(rates).toFixed(1)} | ${rates.map((r) => r.toFixed(1)).join(', ')} | ${cpu} | ${perStep.join(' | ')} | ${counts} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

interface Started {
  pid: number;
  port: number;
  user: string;
  password: string;
  stop(): Promise<void>;
}

async function start(variant: Variant, minio: BenchMinio | undefined, proxy: CountingProxy | undefined): Promise<Started> {
  const endpoint = proxy ? proxy.endpoint : minio?.endpoint;
  if (variant.rclone) {
    if (!minio || !endpoint) throw new Error('rclone needs the S3 driver');
    const peer = await startRclone({ ...minio, endpoint }, BUCKET);
    return { pid: peer.pid, port: peer.port, user: peer.user, password: peer.password, stop: peer.stop };
  }
  const storage: Record<string, string> = minio
    ? { S3_BUCKET: BUCKET, S3_ENDPOINT: endpoint!, S3_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey }
    : { DATA_DIR: scratch('probe-local') };
  const password = 'probe-password';
  const server = await startServerProcess(
    childEnv({ ...storage, FTP_PORT: '0', FTP_USER: 'probe', FTP_PASSWORD: password, ...variant.env }),
    { args: [...(variant.flags ?? nodeFlags()), variant.main ?? MAIN] },
  );
  return { pid: server.child.pid!, port: server.port, user: 'probe', password, stop: async () => void (await server.stop()) };
}

await main();
