import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { ConfigError } from '../src/config/index.js';
import { loadBandwidthConfig, Throttle, TokenBucket } from '../src/data/throttle.js';

const KiB = 1024;

function source(data: Buffer, chunkBytes: number): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunkBytes) yield data.subarray(i, i + chunkBytes);
    })(),
  );
}

function sink(): { stream: Writable; received: () => Buffer; bytes: () => number } {
  const chunks: Buffer[] = [];
  let bytes = 0;
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      bytes += chunk.length;
      done();
    },
  });
  return { stream, received: () => Buffer.concat(chunks), bytes: () => bytes };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('throttle', () => {
  for (const chunkBytes of [16 * KiB, 256 * KiB]) {
    test(`256 KiB at 128 KiB/s takes about 2 s, bytes intact (${chunkBytes / KiB} KiB chunks)`, async () => {
      const data = randomBytes(256 * KiB);
      const out = sink();
      const started = performance.now();
      await pipeline(source(data, chunkBytes), new Throttle(128 * KiB), out.stream);
      const seconds = (performance.now() - started) / 1000;
      assert.ok(seconds >= 1.8 && seconds < 3, `took ${seconds.toFixed(2)} s`);
      assert.equal(sha(out.received()), sha(data));
    });
  }

  test('it is smooth: no more than about a tenth of a second ahead of the rate at any time', async () => {
    const out = sink();
    const rate = 256 * KiB;
    const samples: number[] = [];
    const started = performance.now();
    const timer = setInterval(() => {
      const allowed = ((performance.now() - started) / 1000) * rate + rate / 10 + 64 * KiB;
      samples.push(out.bytes() - allowed);
    }, 50);
    await pipeline(source(randomBytes(384 * KiB), 64 * KiB), new Throttle(rate), out.stream);
    clearInterval(timer);
    assert.ok(samples.length > 10);
    assert.ok(samples.every((excess) => excess <= 0), `bytes ran ahead of the rate: ${Math.max(...samples)}`);
  });

  test('an abort mid-way ends the pipeline promptly, and no slice is sent after it', async () => {
    const out = sink();
    const controller = new AbortController();
    const throttle = new Throttle(64 * KiB);
    setTimeout(() => controller.abort(), 300);
    const started = performance.now();
    await assert.rejects(
      pipeline(source(randomBytes(1024 * KiB), 64 * KiB), throttle, out.stream, { signal: controller.signal }),
      { name: 'AbortError' },
    );
    const took = performance.now() - started;
    assert.ok(took < 450, `ended ${took.toFixed(0)} ms after start, abort at 300`);
    assert.ok(throttle.destroyed);
    const after = out.bytes();
    assert.ok(after < 64 * KiB, `only about 300 ms worth passed: ${after}`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(out.bytes(), after, 'the pending timer did not fire into the destroyed stream');
  });

  test('destroy() while waiting ends at once', async () => {
    const throttle = new Throttle(4 * KiB);
    const out = sink();
    const done = pipeline(source(randomBytes(64 * KiB), 16 * KiB), throttle, out.stream);
    await new Promise((r) => setTimeout(r, 100));
    const started = performance.now();
    throttle.destroy(new Error('client went away'));
    await assert.rejects(done, /client went away/);
    assert.ok(performance.now() - started < 100);
  });

  test('one bucket shared by two streams holds their sum to its rate', async () => {
    const bucket = new TokenBucket(128 * KiB);
    const started = performance.now();
    await Promise.all(
      [0, 1].map(() => pipeline(source(randomBytes(128 * KiB), 16 * KiB), new Throttle(bucket), sink().stream)),
    );
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds >= 1.8 && seconds < 3, `took ${seconds.toFixed(2)} s`);
  });

  test('a bucket refuses a rate that is not positive', () => {
    assert.throws(() => new TokenBucket(0), RangeError);
    assert.throws(() => new TokenBucket(Number.NaN), RangeError);
  });

  test('FTP_UPLOAD_KIBPS and FTP_DOWNLOAD_KIBPS', () => {
    assert.deepEqual(loadBandwidthConfig({}), { uploadBytesPerSecond: undefined, downloadBytesPerSecond: undefined });
    assert.deepEqual(loadBandwidthConfig({ FTP_UPLOAD_KIBPS: '512', FTP_DOWNLOAD_KIBPS: '0' }), {
      uploadBytesPerSecond: 512 * KiB,
      downloadBytesPerSecond: undefined,
    });
    assert.throws(() => loadBandwidthConfig({ FTP_UPLOAD_KIBPS: '1.5' }), ConfigError);
    assert.throws(() => loadBandwidthConfig({ FTP_DOWNLOAD_KIBPS: '99999999' }), /FTP_DOWNLOAD_KIBPS/);
  });
});
