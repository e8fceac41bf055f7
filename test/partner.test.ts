import { Storages } from '../src/storage/storages.js';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { Client } from 'basic-ftp';
import { ExternalAuth } from '../src/auth/external.js';
import type { Config } from '../src/config/index.js';
import { EventSink } from '../src/events/sink.js';
import { verifySignature } from '../src/events/signature.js';
import { Metrics } from '../src/server/metrics.js';
import { startServer } from '../src/server/server.js';
import { createStorage } from '../src/storage/index.js';
import { tempDir } from './helpers/server.js';

test('wired: provider login, throttled upload, signed upload and delete events', async () => {
  const events: Record<string, unknown>[] = [];
  const rx = createServer((req, res) => {
    const c: Buffer[] = [];
    req.on('data', (d: Buffer) => c.push(d)).on('end', () => {
      const body = Buffer.concat(c);
      assert.ok(verifySignature('s'.repeat(32), body, req.headers['x-s3ftp-timestamp'] as string, req.headers['x-s3ftp-signature'] as string));
      events.push(JSON.parse(body.toString()));
      res.end();
    });
  });
  const idp = createServer((req, res) => {
    const c: Buffer[] = [];
    req.on('data', (d: Buffer) => c.push(d)).on('end', () => {
      const b = JSON.parse(Buffer.concat(c).toString());
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(b.password === 'pw-partner' ? { allow: true, user: { home: '/partner', permissions: ['list', 'write', 'delete'] } } : { allow: false }));
    });
  });
  await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  const dataDir = tempDir();
  const config = {
    host: '127.0.0.1', port: 0, users: [{ name: 'alice', password: { kind: 'plain', value: 'pw-alice' }, home: '' }],
    storage: { kind: 'local', dataDir }, logLevel: 'silent', logPretty: false, idleTimeoutMs: 60_000, loginTimeoutMs: 60_000,
    uploadSettleMs: 10, dataTimeoutMs: 15_000, maxCommandBytes: 4096, shutdownGraceMs: 5000, sweepAgeMs: 24 * 3600_000,
    limits: { maxConnections: 100, maxConnectionsPerAddress: 100, maxLoginFailures: 100, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 10 },
    bandwidth: { uploadBytesPerSecond: 256 * 1024 },
  } as Config;
  const log = pino({ level: 'silent' });
  const metrics = new Metrics();
  const sink = new EventSink(
    { url: new URL(`http://127.0.0.1:${(rx.address() as AddressInfo).port}/`), secret: 's'.repeat(32), kinds: new Set(['upload', 'delete']), timeoutMs: 2000, maxAttempts: 3, queueSize: 100, concurrency: 2, backoffBaseMs: 50, backoffMaxMs: 500 },
    { log, count: (outcome, n) => metrics.events.inc({ outcome }, n) },
  );
  const externalAuth = new ExternalAuth({ url: new URL(`http://127.0.0.1:${(idp.address() as AddressInfo).port}/`), timeoutMs: 2000, cacheMs: 0 });
  const storages = new Storages(config.storage, (c) => createStorage(c, log));
  const server = await startServer(config, storages, log, { metrics, events: sink, externalAuth });
  const client = new Client();
  try {
    await assert.rejects(client.access({ host: '127.0.0.1', port: server.address.port, user: 'partner', password: 'wrong' }), /530/);
    await client.access({ host: '127.0.0.1', port: server.address.port, user: 'partner', password: 'pw-partner' });
    const data = randomBytes(160 * 1024);
    const started = Date.now();
    await client.uploadFrom(Readable.from([data]), 'a.bin');
    const took = Date.now() - started;
    assert.ok(took > 450, `throttled: ${took} ms`);
    await client.remove('a.bin');
    client.close();
    const alice = new Client();
    await alice.access({ host: '127.0.0.1', port: server.address.port, user: 'alice', password: 'pw-alice' });
    alice.close();
    await sink.close(2000);
    const [up, del] = events.sort((a, b) => (a.kind === 'upload' ? -1 : 1) - (b.kind === 'upload' ? -1 : 1) || 0);
    assert.equal(up?.kind, 'upload');
    assert.equal(up?.path, '/a.bin');
    assert.equal(up?.key, 'partner/a.bin');
    assert.equal(up?.size, data.length);
    assert.equal(up?.sha256, createHash('sha256').update(data).digest('hex'));
    assert.equal(up?.user, 'partner');
    assert.equal(up?.bucket, undefined);
    assert.equal(del?.kind, 'delete');
    const text = metrics.render();
    assert.match(text, /s3ftp_events_total\{outcome="delivered"\} 2/);
    assert.match(text, /s3ftp_auth_provider_total\{result="refused"\} 1/);
    assert.match(text, /s3ftp_auth_provider_total\{result="ok"\} 1/);
    console.log(JSON.stringify(events), took);
  } finally {
    client.close();
    await server.close(100);
    await storages.close();
    rx.closeAllConnections(); rx.close(); idp.closeAllConnections(); idp.close();
  }
});
