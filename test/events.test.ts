import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, type StorageConfig } from '../src/config/index.js';
import { loadEventsConfig, type EventsConfig } from '../src/events/config.js';
import { SIGNATURE_HEADER, signatureHeaders, TIMESTAMP_HEADER, verifySignature } from '../src/events/signature.js';
import { createStorage } from '../src/storage/index.js';
import { Storages } from '../src/storage/storages.js';
import { EventSink } from '../src/events/sink.js';
import type { EventOutcome, FileEvent, FileEventInput } from '../src/events/types.js';
import { RawFtp, store } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER } from './helpers/server.js';

const SECRET = 'a-test-secret-of-32-bytes-length';

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

const servers: Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** A real HTTP receiver on loopback; `handler` decides each answer. */
async function receiver(handler: Handler): Promise<{ url: string; requests: number }> {
  const state = { url: '', requests: 0 };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.requests++;
      handler(req, Buffer.concat(chunks), res);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?token=t`;
  return state;
}

function setup(url: string, overrides: Partial<EventsConfig> = {}) {
  const counts: Record<string, number> = {};
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  );
  const config: EventsConfig = {
    url: new URL(url),
    secret: SECRET,
    kinds: new Set(['upload', 'delete']),
    timeoutMs: 2000,
    maxAttempts: 3,
    queueSize: 100,
    concurrency: 2,
    backoffBaseMs: 20,
    backoffMaxMs: 100,
    ...overrides,
  };
  const sink = new EventSink(config, {
    log,
    count: (outcome: EventOutcome, n: number) => (counts[outcome] = (counts[outcome] ?? 0) + n),
  });
  return { sink, counts, lines };
}

function upload(path = '/in/a.csv'): FileEventInput {
  return {
    kind: 'upload',
    user: 'alice',
    clientAddress: '192.0.2.7',
    path,
    bucket: 'b',
    key: `alice${path}`,
    size: 3,
    sha256: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    session: 'abc123',
  };
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('events: delivery', () => {
  test('an upload is POSTed once with a signature the receiver verifies', async () => {
    const received: FileEvent[] = [];
    const rx = await receiver((req, body, res) => {
      const ok = verifySignature(SECRET, body, req.headers[TIMESTAMP_HEADER] as string, req.headers[SIGNATURE_HEADER] as string);
      assert.ok(ok, 'signature verifies');
      assert.equal(req.headers['content-type'], 'application/json');
      received.push(JSON.parse(body.toString()) as FileEvent);
      res.writeHead(204).end();
    });
    const { sink, counts } = setup(rx.url);
    assert.equal(sink.emit(upload()), true);
    assert.equal(sink.emit({ ...upload(), kind: 'mkdir' }), false, 'kinds not configured are not sent');
    await waitFor(() => counts.delivered === 1);
    assert.equal(received.length, 1);
    const e = received[0]!;
    assert.equal(e.kind, 'upload');
    assert.equal(e.user, 'alice');
    assert.equal(e.path, '/in/a.csv');
    assert.equal(e.key, 'alice/in/a.csv');
    assert.equal(e.size, 3);
    assert.match(e.id, /^[0-9a-f-]{36}$/);
    assert.ok(!Number.isNaN(Date.parse(e.time)));
    assert.equal((await sink.close(1000)).dropped, 0);
  });

  test('the signature binds the body and the timestamp; old timestamps are refused', () => {
    const body = '{"a":1}';
    const now = 1_700_000_000_000;
    const h = signatureHeaders(SECRET, body, now);
    const ts = h[TIMESTAMP_HEADER]!;
    const sig = h[SIGNATURE_HEADER]!;
    assert.match(sig, /^sha256=[0-9a-f]{64}$/);
    assert.equal(verifySignature(SECRET, body, ts, sig, { nowMs: now }), true);
    assert.equal(verifySignature(SECRET, '{"a":2}', ts, sig, { nowMs: now }), false, 'other body');
    assert.equal(verifySignature(SECRET, body, String(Number(ts) + 1), sig, { nowMs: now }), false, 'other timestamp');
    assert.equal(verifySignature(`${SECRET}x`, body, ts, sig, { nowMs: now }), false, 'other secret');
    assert.equal(verifySignature(SECRET, body, ts, sig, { nowMs: now + 301_000 }), false, 'replayed after 5 minutes');
    assert.equal(verifySignature(SECRET, body, undefined, sig, { nowMs: now }), false);
  });

  test('a receiver that fails with 500 first is retried, then delivered', async () => {
    let calls = 0;
    const ids: string[] = [];
    const rx = await receiver((_req, body, res) => {
      ids.push((JSON.parse(body.toString()) as FileEvent).id);
      res.writeHead(++calls === 1 ? 500 : 200).end('ok');
    });
    const { sink, counts } = setup(rx.url);
    sink.emit(upload());
    await waitFor(() => counts.delivered === 1);
    assert.equal(counts.retried, 1);
    assert.equal(rx.requests, 2);
    assert.equal(ids[0], ids[1], 'a retry carries the same id, so the receiver can drop duplicates');
    await sink.close(1000);
  });

  test('a 4xx answer is final, not retried', async () => {
    const rx = await receiver((_req, _body, res) => res.writeHead(400).end());
    const { sink, counts } = setup(rx.url);
    sink.emit(upload());
    await waitFor(() => counts.failed === 1);
    assert.equal(rx.requests, 1);
    assert.equal(counts.retried, undefined);
    await sink.close(1000);
  });

  test('a redirect is not followed and is final, like a 4xx', async () => {
    let followed = 0;
    const elsewhere = await receiver((_req, _body, res) => {
      followed++;
      res.writeHead(200).end();
    });
    const rx = await receiver((_req, _body, res) => res.writeHead(307, { location: elsewhere.url }).end());
    const { sink, counts, lines } = setup(rx.url);
    sink.emit(upload());
    await waitFor(() => counts.failed === 1);
    assert.equal(rx.requests, 1);
    assert.equal(counts.retried, undefined);
    assert.equal(followed, 0);
    assert.ok(lines.some((l) => l.event === 'event-attempt-failed' && l.status === 307));
    assert.ok(lines.some((l) => l.event === 'event-failed' && l.level === 50 && (l.failed as FileEvent).path === '/in/a.csv'));
    await sink.close(1000);
  });

  test('a receiver that never answers times out; attempts are bounded', async () => {
    const rx = await receiver(() => {}); // holds every request
    const { sink, counts, lines } = setup(rx.url, { timeoutMs: 200, maxAttempts: 2 });
    const started = Date.now();
    sink.emit(upload());
    await waitFor(() => counts.failed === 1, 3000);
    const took = Date.now() - started;
    assert.ok(took >= 400 && took < 1500, `gave up after two 200 ms attempts, took ${took} ms`);
    assert.equal(counts.retried, 1);
    assert.equal(rx.requests, 2);
    const attempt = lines.find((l) => l.event === 'event-attempt-failed');
    assert.match(String(attempt?.error), /no answer within 200 ms/);
    assert.ok(!String(attempt?.url).includes('token'), 'the query (which may hold a token) is not logged');
    assert.ok(lines.some((l) => l.event === 'event-failed' && l.level === 50));
    await sink.close(1000);
  });
});

describe('events: queue and shutdown', () => {
  test('a full queue drops the newest events, counts and logs them; close() abandons the rest', async () => {
    const rx = await receiver(() => {});
    const { sink, counts, lines } = setup(rx.url, { concurrency: 1, queueSize: 2, timeoutMs: 60_000 });
    const accepted = [1, 2, 3, 4, 5].map((i) => sink.emit(upload(`/f${i}`)));
    // The first leaves the queue at once for the one delivery slot; two wait; two are refused.
    assert.deepEqual(accepted, [true, true, true, false, false]);
    assert.equal(counts.dropped_overflow, 2);
    const dropped = lines.filter((l) => l.event === 'event-dropped').map((l) => (l.dropped as FileEvent).path);
    assert.deepEqual(dropped, ['/f4', '/f5']);
    await waitFor(() => rx.requests === 1);
    const started = Date.now();
    const result = await sink.close(150);
    const took = Date.now() - started;
    assert.ok(took >= 140 && took < 1000, `close waited its grace and no more: ${took} ms`);
    assert.equal(result.dropped, 3, 'two queued and one in flight');
    assert.equal(counts.dropped_shutdown, 3);
    assert.ok(lines.some((l) => l.event === 'events-dropped' && l.dropped === 3 && l.level === 50));
    // Each abandoned event is in the log whole, at error level, to be replayed from there.
    const abandoned = lines.filter((l) => l.event === 'event-dropped' && l.reason === 'dropped_shutdown');
    assert.deepEqual(abandoned.map((l) => (l.dropped as FileEvent).path).sort(), ['/f1', '/f2', '/f3']);
    assert.ok(abandoned.every((l) => l.level === 50 && (l.dropped as FileEvent).id && (l.dropped as FileEvent).user === 'alice'));
    assert.equal(sink.emit(upload()), false, 'a closed sink takes nothing');
    assert.equal(counts.dropped_shutdown, 4);
  });

  test('close() flushes what is queued within the grace period', async () => {
    const paths: string[] = [];
    const rx = await receiver((_req, body, res) => {
      setTimeout(() => {
        paths.push((JSON.parse(body.toString()) as FileEvent).path);
        res.writeHead(200).end();
      }, 50);
    });
    const { sink, counts } = setup(rx.url, { concurrency: 2 });
    for (let i = 0; i < 6; i++) sink.emit(upload(`/f${i}`));
    const started = Date.now();
    const result = await sink.close(5000);
    assert.ok(Date.now() - started < 2000, 'close returns once drained, not at the end of the grace');
    assert.equal(result.dropped, 0);
    assert.equal(counts.delivered, 6);
    assert.deepEqual(paths.sort(), ['/f0', '/f1', '/f2', '/f3', '/f4', '/f5']);
  });

  test('close() cuts a backoff sleep short', async () => {
    const rx = await receiver((_req, _body, res) => res.writeHead(503).end());
    const { sink, counts } = setup(rx.url, { backoffBaseMs: 60_000, backoffMaxMs: 60_000, maxAttempts: 5 });
    // Math.random() × 60 s: wait for the first failure, then close with a short grace.
    sink.emit(upload());
    await waitFor(() => counts.retried === 1);
    const started = Date.now();
    const result = await sink.close(100);
    assert.ok(Date.now() - started < 1000);
    assert.equal(result.dropped, 1);
  });
});

describe('events: configuration', () => {
  test('off without EVENTS_URL; EVENTS_SECRET alone is a mistake', () => {
    assert.equal(loadEventsConfig({}), undefined);
    assert.throws(() => loadEventsConfig({ EVENTS_SECRET: SECRET }), /EVENTS_SECRET: needs EVENTS_URL/);
  });

  test('https anywhere, plain http only to loopback', () => {
    assert.equal(loadEventsConfig({ EVENTS_URL: 'https://hooks.example.com/s3ftp', EVENTS_SECRET: SECRET })?.url.host, 'hooks.example.com');
    for (const ok of ['http://127.0.0.1:8080/x', 'http://localhost/x', 'http://[::1]:9/x', 'http://127.8.9.10/']) {
      assert.ok(loadEventsConfig({ EVENTS_URL: ok }), ok);
    }
    for (const [url, message] of [
      ['http://hooks.example.com/x', /only allowed to a loopback address/],
      ['http://10.0.0.5/x', /only allowed to a loopback address/],
      ['http://127.0.0.1.example.com/x', /only allowed to a loopback address/],
      ['ftp://127.0.0.1/x', /is not http/],
      ['https://user:pw@hooks.example.com/', /credentials/],
      ['https://hooks.example.com/unsigned', /EVENTS_SECRET: must be set when EVENTS_URL is not a loopback address/],
      ['not a url', /is not a URL/],
    ] as const) {
      assert.throws(() => loadEventsConfig({ EVENTS_URL: url, ...(url.includes('unsigned') ? {} : { EVENTS_SECRET: SECRET }) }), (err: Error) => err instanceof ConfigError && message.test(err.message), url);
    }
  });

  test('kinds, limits and secret length are validated', () => {
    const c = loadEventsConfig({ EVENTS_URL: 'https://h.example/', EVENTS_KINDS: 'delete, Rename,mkdir', EVENTS_SECRET: SECRET })!;
    assert.deepEqual([...c.kinds].sort(), ['delete', 'mkdir', 'rename', 'upload']);
    assert.equal(c.secret, SECRET);
    assert.equal(c.queueSize, 10000);
    assert.throws(() => loadEventsConfig({ EVENTS_URL: 'https://h.example/', EVENTS_KINDS: 'download', EVENTS_SECRET: SECRET }), /EVENTS_KINDS: "download"/);
    assert.throws(() => loadEventsConfig({ EVENTS_URL: 'https://h.example/', EVENTS_SECRET: 'short' }), /at least 16 bytes/);
    assert.throws(() => loadEventsConfig({ EVENTS_URL: 'https://h.example/', EVENTS_QUEUE_SIZE: '0', EVENTS_SECRET: SECRET }), /EVENTS_QUEUE_SIZE/);
    assert.throws(() => loadEventsConfig({ EVENTS_URL: 'https://h.example/', EVENTS_TIMEOUT: 'x', EVENTS_SECRET: SECRET }), /EVENTS_TIMEOUT/);
  });
});

describe('events: location', () => {
  test('bucket and key on S3 (prefix joined as the driver joins it), key alone on the local driver', () => {
    const s3 = { kind: 's3', bucket: 'drop', prefix: '', region: 'r', forcePathStyle: false, partSize: 1, queueSize: 1, requestTimeoutMs: 1, extraBuckets: ['exports'] } as const;
    const locate = (config: StorageConfig, path: string) => {
      const storages = new Storages(config, (c) => createStorage(c));
      const mounts = config.kind === 's3' ? [{ dir: '/out', target: { bucket: 'exports', path: 'a' } }] : [];
      const view = storages.viewFor({ home: 'alice', mounts });
      void storages.close();
      return view.locate(path);
    };
    assert.deepEqual(locate(s3, 'in/a.csv'), { bucket: 'drop', key: 'alice/in/a.csv' });
    assert.deepEqual(locate({ ...s3, prefix: 'ftp/root' }, 'a.csv'), { bucket: 'drop', key: 'ftp/root/alice/a.csv' });
    assert.deepEqual(locate(s3, 'out/x/b.csv'), { bucket: 'exports', key: 'a/x/b.csv' });
    assert.deepEqual(locate({ kind: 'local', dataDir: '/srv/data' }, 'a.csv'), { key: 'alice/a.csv' });
  });
});

for (const driver of await drivers()) {
  describe(`events: what an upload published (${driver.name})`, { skip: driver.skip }, () => {
    test('keepPartialUploads: an upload cut off publishes what was received, and its event says partial', async () => {
      const received: FileEvent[] = [];
      // Its own receiver, closed below: the file's after() runs only once the loop is idle.
      const rx = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          received.push(JSON.parse(Buffer.concat(chunks).toString()) as FileEvent);
          res.end();
        });
      });
      await new Promise<void>((resolve) => rx.listen(0, '127.0.0.1', resolve));
      const { sink } = setup(`http://127.0.0.1:${(rx.address() as AddressInfo).port}/`);
      const server = await startTestServer(driver, { users: [{ name: USER, password: { kind: 'plain', value: PASSWORD }, home: '', keepPartialUploads: true }] }, { events: sink });
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      try {
        assert.equal(await store(raw, 'kept.bin', 'the whole file'), 226);
        const data = await raw.passive();
        await raw.expect('STOR kept.bin', 150);
        await new Promise<void>((resolve) => data.write(Buffer.alloc(64 * 1024, 'p'), () => resolve()));
        await new Promise((r) => setTimeout(r, 300));
        data.resetAndDestroy();
        assert.equal((await raw.read()).code, 426);
        const size = Number((await raw.expect('SIZE kept.bin', 213)).text);
        assert.ok(size > 0 && size <= 64 * 1024, `published ${size} bytes`);
        // Got: only the whole file's event; a receiver was never told the key now held a truncated one.
        await waitFor(() => received.length === 2);
        assert.deepEqual(
          received.map((e) => [e.path, e.size, e.partial, e.sha256 === undefined]),
          [
            ['/kept.bin', 14, undefined, false],
            ['/kept.bin', size, true, true],
          ],
        );
      } finally {
        raw.close();
        await server.close();
        await sink.close(1000);
        rx.closeAllConnections();
        rx.close();
      }
    });
  });
}
