import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Readable, Writable } from 'node:stream';
import { pino } from 'pino';
import { startHealthServer, type HealthServer } from '../src/server/health.js';
import { Counter, Histogram, Metrics } from '../src/server/metrics.js';
import { createStorage } from '../src/storage/index.js';
import { basicFtp, RawFtp } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';
import { unreachableS3Config } from './helpers/minio.js';

/** One sample's value from the text exposition, or undefined when the series is absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function get(base: string, path: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

test('the registry renders counters, gauges and histograms in the Prometheus text format', () => {
  const counter = new Counter('x_total', 'Things.\nMore', ['verb']);
  counter.inc({ verb: 'a"b\\c\nd' });
  counter.inc({ verb: 'RETR' }, 2);
  assert.deepEqual(counter.render(), [
    '# HELP x_total Things.\\nMore',
    '# TYPE x_total counter',
    'x_total{verb="a\\"b\\\\c\\nd"} 1',
    'x_total{verb="RETR"} 2',
  ]);
  const histogram = new Histogram('h_seconds', 'Latency.', ['op'], [0.1, 1]);
  histogram.observe({ op: 'Get' }, 0.05);
  histogram.observe({ op: 'Get' }, 0.5);
  histogram.observe({ op: 'Get' }, 5);
  assert.deepEqual(histogram.render().slice(2), [
    'h_seconds_bucket{op="Get",le="0.1"} 1',
    'h_seconds_bucket{op="Get",le="1"} 2',
    'h_seconds_bucket{op="Get",le="+Inf"} 3',
    'h_seconds_sum{op="Get"} 5.55',
    'h_seconds_count{op="Get"} 3',
  ]);
  // Every line of the whole registry is a comment or `name{labels} value`.
  for (const line of new Metrics().render().trimEnd().split('\n')) {
    assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{.*\})? -?[\d.e+-]+)$/, line);
  }
});

for (const driver of await drivers()) {
  describe(`health and metrics endpoints (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let health: HealthServer;
    let base: string;
    const metrics = new Metrics();

    before(async () => {
      server = await startTestServer(driver, {}, {
        metrics,
        storageOptions: { onRequest: (op, seconds, ok) => metrics.s3Request(op, seconds, ok) },
      });
      health = await startHealthServer({ host: '127.0.0.1', port: 0, storage: server.storage, metrics, log: pino({ level: 'silent' }) });
      base = `http://127.0.0.1:${health.address.port}`;
    });
    after(async () => {
      await health?.close();
      await server?.close();
    });

    test('/healthz and /readyz answer 200; other paths 404, other methods 405', async () => {
      assert.equal((await get(base, '/healthz')).status, 200);
      assert.equal((await get(base, '/readyz')).status, 200);
      assert.equal((await get(base, '/nope')).status, 404);
      const post = await fetch(`${base}/healthz`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
      assert.equal(post.status, 405);
      await post.body?.cancel();
    });

    test('counters move with real sessions: logins, commands, transfers, bytes, active sessions', async () => {
      const before = (await get(base, '/metrics')).body;
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      const failed = await RawFtp.connect(server.port);
      await failed.expect(`USER ${USER}`, 331);
      await failed.expect('PASS wrong', 530);
      await failed.expect('XYZZY', 500);

      const during = await get(base, '/metrics');
      assert.equal(during.status, 200);
      assert.equal(during.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(sample(during.body, 's3ftp_sessions'), 2);

      const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
      const body = Buffer.alloc(100_000, 7);
      await client.uploadFrom(Readable.from([body]), 'metrics.bin');
      const chunks: Buffer[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _enc, done) {
          chunks.push(chunk);
          done();
        },
      });
      await client.downloadTo(sink, 'metrics.bin');
      assert.equal(Buffer.concat(chunks).length, body.length);
      client.close();
      ftp.close();
      failed.close();
      // Session ends are counted when the sockets close on the server side.
      let after = '';
      for (let i = 0; i < 50; i++) {
        after = (await get(base, '/metrics')).body;
        if (sample(after, 's3ftp_sessions') === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const delta = (series: string) => (sample(after, series) ?? 0) - (sample(before, series) ?? 0);
      assert.equal(sample(after, 's3ftp_sessions'), 0);
      assert.equal(delta('s3ftp_sessions_total'), 3);
      assert.equal(delta('s3ftp_logins_total{result="ok"}'), 2);
      assert.equal(delta('s3ftp_logins_total{result="failed"}'), 1);
      assert.equal(delta('s3ftp_commands_total{verb="PASS",code="530"}'), 1);
      assert.equal(delta('s3ftp_commands_total{verb="unknown",code="500"}'), 1);
      assert.equal(delta('s3ftp_commands_total{verb="STOR",code="226"}'), 1);
      assert.equal(delta('s3ftp_commands_total{verb="RETR",code="226"}'), 1);
      assert.equal(delta('s3ftp_transfers_total{direction="upload",result="ok"}'), 1);
      assert.equal(delta('s3ftp_transfers_total{direction="download",result="ok"}'), 1);
      assert.equal(delta('s3ftp_data_bytes_total{direction="in"}'), body.length);
      assert.ok(delta('s3ftp_data_bytes_total{direction="out"}') >= body.length);
      if (driver.name === 's3') {
        // The upload and the download each sent S3 requests, and they were timed.
        assert.ok((sample(after, 's3ftp_s3_request_duration_seconds_count{operation="ListObjectsV2"}') ?? 0) >= 1, 'readyz listed the prefix');
        assert.ok((sample(after, 's3ftp_s3_request_duration_seconds_count{operation="GetObject"}') ?? 0) >= 1);
        assert.match(after, /^s3ftp_s3_request_duration_seconds_bucket\{operation="GetObject",le="\+Inf"\} \d+$/m);
      }
      assert.ok((sample(after, 'process_resident_memory_bytes') ?? 0) > 0);
    });

    test('/readyz answers 503 while draining for a shutdown', async () => {
      const own = await startHealthServer({ host: '127.0.0.1', port: 0, storage: server.storage, metrics, log: pino({ level: 'silent' }) });
      try {
        const url = `http://127.0.0.1:${own.address.port}`;
        own.drain();
        assert.equal((await get(url, '/readyz')).status, 503);
        assert.equal((await get(url, '/healthz')).status, 200, 'still alive');
      } finally {
        await own.close();
      }
    });
  });
}

test('/readyz answers 503 with the reason when the storage cannot be reached', async () => {
  // A bucket on a port nothing listens on: the ping fails fast with a connection error.
  const storage = createStorage(unreachableS3Config('nowhere'));
  const health = await startHealthServer({ host: '127.0.0.1', port: 0, storage, metrics: new Metrics(), log: pino({ level: 'silent' }) });
  try {
    const res = await get(`http://127.0.0.1:${health.address.port}`, '/readyz');
    assert.equal(res.status, 503);
    assert.match(res.body, /^storage unavailable: bucket nowhere/);
  } finally {
    await health.close();
    await storage.close();
  }
});

test('the health port takes at most 32 connections: a flood of idle ones cannot hold memory, and probes come back when it ends', async () => {
  const storage = createStorage(unreachableS3Config('nowhere'));
  const health = await startHealthServer({ host: '127.0.0.1', port: 0, storage, metrics: new Metrics(), log: pino({ level: 'silent' }) });
  const sockets: Socket[] = [];
  let closed = 0;
  try {
    // Got: 3,000 idle connections accepted, each held until Node's 30 s check.
    for (let i = 0; i < 40; i++) {
      const socket = connect(health.address.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.on('close', () => closed++);
      sockets.push(socket);
      await once(socket, 'connect');
    }
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(closed, 8, 'the eight connections past 32 are closed at once');
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(`http://127.0.0.1:${health.address.port}`, '/healthz')).status, 200);
  } finally {
    for (const s of sockets) s.destroy();
    await health.close();
    await storage.close();
  }
});
