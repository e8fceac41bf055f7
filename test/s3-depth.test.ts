import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as zlib from 'node:zlib';
import { CreateMultipartUploadCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import type { User } from '../src/auth/users.js';
import { KnownDirectories } from '../src/storage/known-directories.js';
import { S3Storage } from '../src/storage/s3.js';
import { StorageError, type FileInfo, type Storage } from '../src/storage/types.js';
import { getS3, s3StorageConfig } from './helpers/minio.js';
import { RawFtp, readAll } from './helpers/ftp.js';
import { startS3Proxy, type ProxyDecide, type ProxyVerdict } from './helpers/s3-proxy.js';
import { drivers, noDanglingUploads, PASSWORD, startBehindS3Proxy, startTestServer, USER, type Driver, type TestServer } from './helpers/server.js';

const MiB = 1024 * 1024;
const T = { timeout: 120_000 };

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Deterministic bytes that differ per seed, so a misplaced part changes the content. */
function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i + 4 <= length; i += 4) buf.writeUInt32LE((Math.imul(i + seed, 2654435761) ^ seed) >>> 0, i);
  return buf;
}

/** Stores content with one transfer command (STOR, APPE) and expects 226. */
/** Uploads with a raw client; `rest` is sent right before the command, after EPSV (REST binds to the next command only). */
async function send(raw: RawFtp, command: string, content: Buffer, rest?: number): Promise<void> {
  const data = await raw.passive();
  if (rest !== undefined) await raw.expect(`REST ${rest}`, 350);
  await raw.expect(command, 150);
  data.end(content);
  const done = await raw.read();
  assert.equal(done.code, 226, done.lines.join(' | '));
}

async function fetch(raw: RawFtp, name: string): Promise<Buffer> {
  const data = await raw.passive();
  await raw.expect(`RETR ${name}`, 150);
  const body = await readAll(data);
  assert.equal((await raw.read()).code, 226);
  return body;
}


/** Sends `bytes` on a STOR's data connection, then resets it (a client that drops). */
async function cutOffStor(raw: RawFtp, name: string, content: Buffer): Promise<void> {
  const data = await raw.passive();
  await raw.expect(`STOR ${name}`, 150);
  await new Promise<void>((resolve) => data.write(content, () => resolve()));
  // Let the server take in what the kernel already holds before the reset.
  await new Promise((r) => setTimeout(r, 500));
  data.resetAndDestroy();
  assert.equal((await raw.read()).code, 426);
}

function count(server: TestServer, operation: string): number {
  return server.s3Requests.get(operation) ?? 0;
}

function objectKey(server: TestServer, path: string): string {
  const config = server.storageConfig;
  return config.kind === 's3' ? `${config.prefix}/${path}` : path;
}

for (const driver of await drivers()) {
  const isS3 = driver.name === 's3';

  describe(`append and resume (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let raw: RawFtp;
    before(async () => {
      server = await startTestServer(driver);
      raw = await RawFtp.login(server.port, USER, PASSWORD);
    });
    after(async () => {
      raw?.close();
      await server?.close();
    });

    test('APPE across the 5 MiB part boundary keeps every byte, copying the old bytes server-side', T, async () => {
      const first = pattern(6 * MiB, 1);
      const more = pattern(MiB + 123, 2);
      await send(raw, 'STOR appended.bin', first);
      const copiesBefore = isS3 ? count(server, 'UploadPartCopy') : 0;
      const readsBefore = isS3 ? count(server, 'GetObject') : 0;
      await send(raw, 'APPE appended.bin', more);
      assert.deepEqual(await fetch(raw, 'appended.bin'), Buffer.concat([first, more]));
      if (isS3) {
        assert.equal(count(server, 'UploadPartCopy') - copiesBefore, 1, 'the old 6 MiB went as one UploadPartCopy');
        assert.equal(count(server, 'GetObject') - readsBefore, 1, 'only the RETR read the object');
        const s3 = driver.s3!;
        const part1 = await s3.client.send(
          new HeadObjectCommand({ Bucket: s3.bucket, Key: objectKey(server, 'appended.bin'), PartNumber: 1 }),
        );
        assert.equal(part1.PartsCount, 2);
        assert.equal(part1.ContentLength, first.length);
        assert.equal(part1.Metadata?.['uploaded-by'], USER);
        assert.equal(part1.Metadata?.['client-address'], '127.0.0.1');
      }
    });

    test('APPE to a small file and to a missing one', T, async () => {
      await send(raw, 'STOR small.txt', Buffer.from('hello '));
      await send(raw, 'APPE small.txt', Buffer.from('world'));
      assert.equal((await fetch(raw, 'small.txt')).toString(), 'hello world');
      await send(raw, 'APPE fresh.txt', Buffer.from('new'));
      assert.equal((await fetch(raw, 'fresh.txt')).toString(), 'new');
    });

    test('APPE of nothing to a large file leaves it as it was', T, async () => {
      const first = pattern(5 * MiB + 7, 3);
      await send(raw, 'STOR same.bin', first);
      await send(raw, 'APPE same.bin', Buffer.alloc(0));
      assert.equal(sha256(await fetch(raw, 'same.bin')), sha256(first));
    });

    test('REST + STOR resumes across a part boundary', T, async () => {
      const whole = pattern(13 * MiB + 5, 4);
      const offset = 6 * MiB + 1;
      // An earlier attempt got further than the offset; the tail beyond it is replaced.
      await send(raw, 'STOR resumed.bin', Buffer.concat([whole.subarray(0, 7 * MiB), Buffer.alloc(100, 0x7a)]));
      await send(raw, 'STOR resumed.bin', whole.subarray(offset), offset);
      assert.equal((await raw.expect('SIZE resumed.bin', 213)).text, String(whole.length));
      assert.equal(sha256(await fetch(raw, 'resumed.bin')), sha256(whole));
    });

    test('REST beyond the end is refused with 554 and changes nothing', T, async () => {
      await send(raw, 'STOR short.txt', Buffer.from('abc'));
      const data = await raw.passive();
      await raw.expect('REST 4', 350);
      const reply = await raw.send('STOR short.txt');
      data.destroy();
      assert.equal(reply.code, 554);
      assert.equal((await fetch(raw, 'short.txt')).toString(), 'abc');
    });

    test('FEAT and HELP offer APPE and REST', T, async () => {
      const feat = await raw.expect('FEAT', 211);
      assert.ok(feat.lines.some((l) => l.trim() === 'REST STREAM'));
      const help = await raw.expect('HELP', 214);
      assert.ok(help.lines.some((l) => /\bAPPE\b/.test(l)));
      assert.ok(help.lines.some((l) => /\bHASH\b/.test(l)));
    });
  });

  describe(`interrupted uploads (${driver.name})`, { skip: driver.skip }, () => {
    // More than two 5 MiB test parts, so S3 is mid multipart upload when the client drops.
    const SENT = 12 * MiB + 321;

    test('by default the previous content stays and no upload is left behind', T, async () => {
      const server = await startTestServer(driver);
      try {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        await send(raw, 'STOR kept.bin', Buffer.from('previous'));
        await cutOffStor(raw, 'kept.bin', pattern(SENT, 5));
        await noDanglingUploads(driver, server);
        assert.equal((await fetch(raw, 'kept.bin')).toString(), 'previous');
        raw.close();
      } finally {
        await server.close();
      }
    });

    test('with keepPartialUploads the received bytes are published, and REST + STOR completes the file', T, async () => {
      const users: User[] = [{ name: USER, password: { kind: 'plain', value: PASSWORD }, home: '', keepPartialUploads: true }];
      const server = await startTestServer(driver, { users });
      try {
        const whole = pattern(SENT + 3 * MiB, 6);
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        await send(raw, 'STOR partial.bin', Buffer.from('previous'));
        await cutOffStor(raw, 'partial.bin', whole.subarray(0, SENT));
        await noDanglingUploads(driver, server);
        const size = Number((await raw.expect('SIZE partial.bin', 213)).text);
        assert.ok(size > 10 * MiB && size <= SENT, `published ${size} of ${SENT} bytes`);
        assert.deepEqual(await fetch(raw, 'partial.bin'), whole.subarray(0, size));
        await send(raw, 'STOR partial.bin', whole.subarray(size), size);
        assert.equal(sha256(await fetch(raw, 'partial.bin')), sha256(whole));
        // A drop before any byte arrived publishes nothing.
        await cutOffStor(raw, 'partial.bin', Buffer.alloc(0));
        assert.equal(sha256(await fetch(raw, 'partial.bin')), sha256(whole));
        raw.close();
      } finally {
        await server.close();
      }
    });
  });

  describe(`STOR into one directory, again and again (${driver.name})`, { skip: driver.skip }, () => {
    test('the parent is listed once; after MKD, RMD, DELE or RNFR/RNTO through the server it is listed again', T, async () => {
      const server = await startTestServer(driver);
      try {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const other = await RawFtp.login(server.port, USER, PASSWORD);
        await raw.expect('MKD seen', 257);
        const lists = () => (isS3 ? count(server, 'ListObjectsV2') : 0);
        const first = lists();
        await send(raw, 'STOR seen/1.txt', Buffer.from('one'));
        // One page of the parent says it exists and which of its names are directories.
        if (isS3) assert.equal(lists() - first, 1);
        const before = lists();
        await send(raw, 'STOR seen/2.txt', Buffer.from('two'));
        await send(other, 'STOR seen/3.txt', Buffer.from('three'));
        // The next STORs into it, from any session, ask S3 nothing before their 150.
        if (isS3) assert.equal(lists() - before, 0);
        // A directory made since (by another session) is known at once: no 150, as ever.
        await other.expect('MKD seen/sub', 257);
        await raw.passive();
        await raw.expect('STOR seen/sub', 550);
        await other.expect('RMD seen/sub', 250);
        // Removed through the server (by another session): the next STOR finds out, with no 150.
        for (const n of [1, 2, 3]) await other.expect(`DELE seen/${n}.txt`, 250);
        await other.expect('RMD seen', 250);
        await raw.passive();
        await raw.expect('STOR seen/4.txt', 550);
        // A rename takes the directory away too.
        await raw.expect('MKD moved', 257);
        await send(raw, 'STOR moved/1.txt', Buffer.from('one'));
        await other.expect('RNFR moved', 350);
        await other.expect('RNTO elsewhere', 250);
        await raw.passive();
        await raw.expect('STOR moved/2.txt', 550);
        assert.equal((await fetch(raw, 'elsewhere/1.txt')).toString(), 'one');
        raw.close();
        other.close();
      } finally {
        await server.close();
      }
    });

    test('a parent bigger than a listing page: each STOR asks about its own name, and a subdirectory is still refused', T, async () => {
      const server = await startTestServer(driver, {}, { storageOptions: { pageSize: 2 } });
      try {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        await raw.expect('MKD big', 257);
        for (const name of ['a', 'b', 'c', 'z']) await raw.expect(`MKD big/${name}`, 257);
        for (const name of ['a', 'z']) {
          await raw.passive();
          await raw.expect(`STOR big/${name}`, 550);
        }
        await send(raw, 'STOR big/file.txt', Buffer.from('file'));
        const before = isS3 ? count(server, 'ListObjectsV2') : 0;
        await send(raw, 'STOR big/other.txt', Buffer.from('other'));
        if (isS3) assert.equal(count(server, 'ListObjectsV2') - before, 1, 'one one-key listing of big/other.txt/');
        raw.close();
      } finally {
        await server.close();
      }
    });
  });

  describe(`HASH (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let raw: RawFtp;
    before(async () => {
      server = await startTestServer(driver);
      raw = await RawFtp.login(server.port, USER, PASSWORD);
    });
    after(async () => {
      raw?.close();
      await server?.close();
    });

    test('FEAT lists the algorithms with the selected one starred; OPTS HASH selects', T, async () => {
      const hashLine = async (): Promise<string | undefined> =>
        (await raw.expect('FEAT', 211)).lines.map((l) => l.trim()).find((l) => l.startsWith('HASH '));
      assert.equal(await hashLine(), 'HASH SHA-256*;SHA-1;MD5;CRC32');
      assert.equal((await raw.expect('OPTS HASH md5', 200)).text, 'MD5');
      assert.equal(await hashLine(), 'HASH SHA-256;SHA-1;MD5*;CRC32');
      assert.equal((await raw.expect('OPTS HASH', 200)).text, 'MD5');
      await raw.expect('OPTS HASH SHA-512', 501);
      assert.equal((await raw.expect('OPTS HASH SHA-256', 200)).text, 'SHA-256');
    });

    test('SHA-256 of an uploaded file: S3 answers from what the upload stored, the local driver reads the file', T, async () => {
      for (const [name, content] of [
        ['one-part.bin', pattern(50, 7)],
        ['many-parts.bin', pattern(11 * MiB + 9, 8)],
      ] as const) {
        await send(raw, `STOR ${name}`, content);
        const reads = isS3 ? count(server, 'GetObject') : 0;
        const reply = await raw.expect(`HASH ${name}`, 213);
        assert.equal(reply.text, `SHA-256 0-${content.length} ${sha256(content)} /${name}`);
        if (isS3) assert.equal(count(server, 'GetObject'), reads, 'HASH did not read the object');
        // Local uploads are not hashed on the way in (it halved their rate); the file is what was received.
        assert.equal((await server.storage.hash(name, 'SHA-256')).stored, isS3);
      }
    });

    test('a file written by another tool is hashed by reading it, in every algorithm', T, async () => {
      const content = pattern(3 * MiB + 1, 9);
      if (isS3) {
        const s3 = driver.s3!;
        await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: objectKey(server, 'foreign.bin'), Body: content }));
      } else {
        const config = server.storageConfig;
        writeFileSync(join(config.kind === 'local' ? config.dataDir : '', 'foreign.bin'), content);
      }
      const expected = {
        'SHA-256': sha256(content),
        'SHA-1': createHash('sha1').update(content).digest('hex'),
        MD5: createHash('md5').update(content).digest('hex'),
        CRC32: zlib.crc32(content).toString(16).padStart(8, '0'),
      };
      for (const [algorithm, hex] of Object.entries(expected)) {
        await raw.expect(`OPTS HASH ${algorithm}`, 200);
        const reads = isS3 ? count(server, 'GetObject') : 0;
        const reply = await raw.expect('HASH foreign.bin', 213);
        assert.equal(reply.text, `${algorithm} 0-${content.length} ${hex} /foreign.bin`);
        if (isS3) assert.equal(count(server, 'GetObject'), reads + 1, 'HASH read the object once');
      }
      await raw.expect('OPTS HASH SHA-256', 200);
    });

    test('an appended file hashes to its whole new content', T, async () => {
      const first = pattern(5 * MiB + 1, 10);
      const more = Buffer.from('tail');
      await send(raw, 'STOR grown.bin', first);
      await send(raw, 'APPE grown.bin', more);
      const reply = await raw.expect('HASH grown.bin', 213);
      assert.equal(reply.text, `SHA-256 0-${first.length + 4} ${sha256(Buffer.concat([first, more]))} /grown.bin`);
      // The old bytes were copied, not seen, so no hash was stored; the answer was computed.
      assert.equal((await server.storage.hash('grown.bin', 'SHA-256')).stored, false);
    });

    test('a renamed file keeps its stored hash (S3; the local driver hashes the file)', T, async () => {
      const content = pattern(1000, 11);
      await send(raw, 'STOR before.bin', content);
      await raw.expect('RNFR before.bin', 350);
      await raw.expect('RNTO after.bin', 250);
      const result = await server.storage.hash('after.bin', 'SHA-256');
      assert.deepEqual(result, { algorithm: 'SHA-256', hash: sha256(content), size: 1000, stored: isS3 });
    });

    test('a directory whose hashed files were deleted can be removed', T, async () => {
      await raw.expect('MKD emptied', 257);
      await send(raw, 'STOR emptied/f.txt', Buffer.from('x'));
      await raw.expect('DELE emptied/f.txt', 250);
      await raw.expect('RMD emptied', 250);
    });

    test('HASH of a directory or a missing file is 550', T, async () => {
      await raw.expect('MKD hdir', 257);
      await raw.expect('HASH hdir', 550);
      await raw.expect('HASH /', 550);
      await raw.expect('HASH missing.bin', 550);
      await raw.expect('HASH', 501);
    });
  });

  describe(`huge directories (${driver.name})`, { skip: driver.skip }, () => {
    const FILES = 25;
    const PAGE = 4;
    let server: TestServer;
    let raw: RawFtp;
    /** Set per listing: resolves when the client has the listing's first bytes. */
    let firstBytes: Promise<void> = Promise.resolve();
    let pagesFetched = 0;
    let streamedBeforePage2 = true;

    before(async () => {
      server = await startTestServer(driver, {}, {
        storageOptions: { pageSize: PAGE },
        wrapStorage: (storage) =>
          beforeListPages(storage, async (page) => {
            pagesFetched++;
            if (page !== 2) return;
            // Page 2 waits for the client to hold page 1: a server that collected pages first would stall here.
            const arrived = await Promise.race([firstBytes.then(() => true), new Promise((r) => setTimeout(r, 5000, false))]);
            if (!arrived) streamedBeforePage2 = false;
          }),
      });
      await server.storage.mkdir('big');
      await Promise.all(
        Array.from({ length: FILES }, (_, i) => server.storage.write(`big/f${String(i).padStart(3, '0')}`, Readable.from([Buffer.from(`${i}`)]))),
      );
      raw = await RawFtp.login(server.port, USER, PASSWORD);
    });
    after(async () => {
      raw?.close();
      await server?.close();
    });

    for (const verb of ['LIST', 'NLST', 'MLSD']) {
      test(`${verb} streams a listing of several pages, the first bytes before the second page is fetched`, T, async () => {
        pagesFetched = 0;
        streamedBeforePage2 = true;
        const data = await raw.passive();
        firstBytes = new Promise((resolve) => data.once('data', () => resolve()));
        const body = readAll(data);
        await raw.expect(`${verb} big`, 150);
        const lines = (await body).toString().split('\r\n').filter(Boolean);
        assert.equal((await raw.read()).code, 226);
        assert.equal(lines.length, FILES);
        for (let i = 0; i < FILES; i++) assert.ok(lines.some((l) => l.endsWith(` f${String(i).padStart(3, '0')}`) || l === `f${String(i).padStart(3, '0')}`));
        assert.ok(pagesFetched >= Math.ceil(FILES / PAGE), `${pagesFetched} pages`);
        assert.ok(streamedBeforePage2, 'page 1 reached the client before page 2 was fetched');
      });
    }

    test('STAT of the directory lists it over the control connection', T, async () => {
      const reply = await raw.expect('STAT big', 213);
      assert.equal(reply.lines.length, FILES + 2);
    });
  });

  describe(`memory (${driver.name})`, { skip: driver.skip }, () => {
    test('RETR to a client that stops reading does not buffer the file', T, async () => {
      const server = await startTestServer(driver);
      try {
        const SIZE = 48 * MiB;
        await server.storage.write('slow.bin', generated(SIZE));
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const data = await raw.passive();
        data.pause();
        await raw.expect('RETR slow.bin', 150);
        await new Promise((r) => setTimeout(r, 1500));
        const status = await raw.expect('STAT', 213);
        const sent = Number(/: (\d+) of (\d+) bytes/.exec(status.text)?.[1]);
        assert.ok(sent < SIZE / 2, `the server sent ${sent} of ${SIZE} bytes to a client that reads nothing`);
        data.resume();
        const body = await readAll(data);
        assert.equal((await raw.read()).code, 226);
        assert.equal(body.length, SIZE);
        raw.close();
      } finally {
        await server.close();
      }
    });

    test('STOR and RETR of 200 MiB keep the process memory bounded', T, async () => {
      const server = await startTestServer(driver);
      try {
        const SIZE = 200 * MiB;
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        // Live memory (JS heap and Buffers) rather than RSS: RSS keeps the high-water mark of the
        // tests run before this one in the same process, so its growth here would prove nothing.
        const live = (): number => {
          const m = process.memoryUsage();
          return m.heapUsed + m.arrayBuffers;
        };
        collectGarbage();
        const baseline = live();
        const rssBefore = process.memoryUsage().rss;
        let peak = baseline;
        // Each sample follows a full collection, so it counts what is held, not garbage not yet collected.
        const sampler = setInterval(() => {
          collectGarbage();
          peak = Math.max(peak, live());
        }, 100);
        try {
          const up = await raw.passive();
          await raw.expect('STOR huge.bin', 150);
          await new Promise<void>((resolve, reject) => generated(SIZE).pipe(up).on('finish', resolve).on('error', reject));
          assert.equal((await raw.read()).code, 226);
          const down = await raw.passive();
          await raw.expect('RETR huge.bin', 150);
          let received = 0;
          await new Promise<void>((resolve, reject) =>
            down
              .pipe(
                new Writable({
                  write(chunk: Buffer, _enc, done) {
                    received += chunk.length;
                    done();
                  },
                }),
              )
              .on('finish', resolve)
              .on('error', reject),
          );
          assert.equal((await raw.read()).code, 226);
          assert.equal(received, SIZE);
        } finally {
          clearInterval(sampler);
        }
        const growth = (peak - baseline) / MiB;
        const rss = (process.memoryUsage().rss - rssBefore) / MiB;
        process.stderr.write(`# ${driver.name}: 200 MiB STOR + RETR: live memory peak +${growth.toFixed(1)} MiB, RSS +${rss.toFixed(1)} MiB\n`);
        // Test settings: 5 MiB parts, 2 in flight: about 15 MiB of part buffers, plus the SDK's and the
        // client's own. A server that buffered the file would hold 200 MiB.
        assert.ok(growth < 80, `live memory grew by ${growth.toFixed(1)} MiB`);
        raw.close();
      } finally {
        await server.close();
      }
    });
  });
}

describe('what a storage knows of directories (s3)', () => {
  const refusal = (code: string) => (err: unknown) => err instanceof StorageError && err.code === code;
  const body = () => Readable.from([Buffer.from('x')]);

  test('two storages on one bucket (a prefixed root and a whole-bucket mount) forget together, names with control characters included', T, async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const config = s3StorageConfig(s3, 'known');
    const root = config.prefix;
    const prefixed = new S3Storage(config);
    const whole = new S3Storage({ ...config, prefix: '' });
    try {
      await prefixed.mkdir('docs');
      await prefixed.write('docs/a.txt', body());
      // The other storage makes a directory under what the first one has just listed.
      await whole.mkdir(`${root}/docs/report`);
      await assert.rejects(prefixed.write('docs/report', body()), refusal('IsADirectory'));
      // And takes the parent away.
      await whole.rmdir(`${root}/docs/report`);
      await whole.delete(`${root}/docs/a.txt`);
      await whole.rmdir(`${root}/docs`);
      await assert.rejects(prefixed.write('docs/b.txt', body()), refusal('NotFound'));
      // A name with a control character (XML 1.0 cannot carry one; a store may alter it) is checked on its own.
      await prefixed.mkdir('ctl');
      await whole.mkdir(`${root}/ctl/a\x01b`);
      await prefixed.write('ctl/c.txt', body());
      await assert.rejects(prefixed.write('ctl/a\x01b', body()), refusal('IsADirectory'));
    } finally {
      await prefixed.close();
      await whole.close();
    }
  });

  test('keys XML 1.0 cannot carry are listed, read and renamed as they are stored', T, async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const config = s3StorageConfig(s3, 'odd');
    const storage = new S3Storage(config);
    // Written by another tool. ESC and U+FFFF came back from a listing as U+FFFD, so two names
    // were listed as one, RETR of the listed name read the other object, and a directory rename
    // failed on every try (its copies of the altered keys: NoSuchKey).
    const names = ['esc\x1b.csv', 'nonchar\uffff', 'real\ufffd.csv', 'cr\rname', 'plus+and space%41.txt'];
    try {
      for (const name of names) {
        await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `${config.prefix}/dir/${name}`, Body: name }));
      }
      const listed = async (path: string) => {
        const out: FileInfo[] = [];
        for await (const page of storage.list(path)) out.push(...page);
        return out.map((e) => e.name).sort();
      };
      assert.deepEqual(await listed('dir'), [...names].sort());
      for (const name of names) {
        const read = await storage.read(`dir/${name}`);
        const chunks: Buffer[] = [];
        for await (const chunk of read.stream) chunks.push(chunk as Buffer);
        assert.equal(Buffer.concat(chunks).toString(), name, JSON.stringify(name));
      }
      await storage.rename('dir', 'moved');
      assert.deepEqual(await listed('moved'), [...names].sort());
      assert.deepEqual(await listed('dir').catch(() => []), []);
    } finally {
      await storage.close();
    }
  });

  test('the sweep aborts a left-over upload whose key XML cannot carry', T, async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const config = s3StorageConfig(s3, 'sweepodd');
    const storage = new S3Storage(config);
    const Key = `${config.prefix}/esc\x1b.bin`;
    try {
      const { UploadId } = await s3.client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key }));
      // Got: listed as esc\ufffd.bin, which no abort could name: left for the lifecycle rule, retried every hour.
      assert.equal((await storage.sweep(0)).removed, 1);
      const left = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, EncodingType: 'url' }));
      assert.ok(!(left.Uploads ?? []).some((u) => u.UploadId === UploadId), 'the upload is still there');
    } finally {
      await storage.close();
    }
  });

  test('readiness under a prefix lists inside it: a policy may grant s3:ListBucket only there, and refuse HeadBucket', T, async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const config = s3StorageConfig(s3, 'ready');
    // As AWS answers the CDK stack's role, whose s3:ListBucket has an s3:prefix condition.
    // Got: ping() rejected (HeadBucket refused), so /readyz said 503 on every deployment with a prefix.
    const proxy = await startS3Proxy(config.endpoint!, ({ operation }) => (operation === 'HEAD bucket' ? { status: 403, code: 'AccessDenied' } : 'forward'));
    const storage = new S3Storage({ ...config, endpoint: proxy.endpoint });
    try {
      await storage.ping();
    } finally {
      await storage.close();
      await proxy.close();
    }
  });

  test('an answer asked for before a change is not kept', () => {
    const known = new KnownDirectories(10_000);
    const asked = known.generation;
    known.forget(); // an MKD, RMD, DELE or rename finished while the listing was out
    known.add('d/', asked, { subdirectories: new Set() });
    assert.equal(known.get('d/'), undefined);
    known.add('d/', known.generation, { subdirectories: new Set(['x']) });
    assert.deepEqual([...(known.get('d/')?.subdirectories ?? [])], ['x']);
  });
});

describe('directory rename that fails midway (s3)', async () => {
  const s3Driver = (await drivers()).find((d) => d.name === 's3')!;

  test('answers 451, loses nothing, and a second RNFR/RNTO finishes the job', { ...T, skip: s3Driver.skip }, async () => {
    const logLines: string[] = [];
    // From the seventh copy on, S3 answers 503 until the 451 is seen; two copies run at a
    // time, so the failure lands with some objects copied and some not.
    let copies = 0;
    let healed = false;
    const decide: ProxyDecide = ({ operation }) =>
      operation === 'CopyObject' && ++copies > 6 && !healed ? { status: 503, code: 'SlowDown' } : 'forward';
    const server = await startBehindS3Proxy(s3Driver, decide, { renameConcurrency: 2 }, {}, { logLines, storageOptions: { pageSize: 3 } });
    try {
      const s3 = s3Driver.s3!;
      const prefix = server.storageConfig.kind === 's3' ? server.storageConfig.prefix : '';
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      await raw.expect('MKD src/sub', 257);
      const names = [...Array.from({ length: 10 }, (_, i) => `src/f${i}`), 'src/sub/deep'];
      for (const name of names) await send(raw, `STOR ${name}`, Buffer.from(`content of ${name}`));
      const relative = ['', 'sub/', ...names.map((n) => n.slice('src/'.length))];

      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      healed = true;
      const keys = await listKeys(s3.client, s3.bucket, `${prefix}/`);
      const copied = relative.filter((r) => keys.has(`${prefix}/dst/${r}`));
      assert.ok(copied.length > 0 && copied.length < relative.length, `${copied.length} of ${relative.length} copied`);
      for (const r of relative) assert.ok(keys.has(`${prefix}/src/${r}`), `src/${r} still exists`);
      assert.ok(logLines.some((l) => l.includes('"rename-failed"')));
      // The partial target is a directory, and its journal is not listed.
      const partial = await listing(raw, 'NLST dst');
      assert.ok(!partial.some((n) => n.includes('.s3ftp-')), partial.join(','));
      // Any other rename onto it is still refused.
      await raw.expect('MKD other', 257);
      await raw.expect('RNFR other', 350);
      await raw.expect('RNTO dst', 550);

      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 250);
      await raw.expect('CWD src', 550);
      for (const name of names) {
        const moved = name.replace(/^src\//, 'dst/');
        assert.equal((await fetch(raw, moved)).toString(), `content of ${name}`);
      }
      assert.deepEqual((await listing(raw, 'NLST dst')).sort(), ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9', 'sub']);
      const after = await listKeys(s3.client, s3.bucket, `${prefix}/`);
      assert.deepEqual([...after].filter((k) => k.includes('.s3ftp-') || k.startsWith(`${prefix}/src`)), []);
      assert.ok(logLines.some((l) => l.includes('"rename-done"')));
      raw.close();
    } finally {
      await server.close();
    }
  });

  test("a journal with no record of copies (an earlier version's) still resumes, writing over the target", { ...T, skip: s3Driver.skip }, async () => {
    const server = await startTestServer(s3Driver);
    try {
      const s3 = s3Driver.s3!;
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      for (let i = 0; i < 3; i++) await send(raw, `STOR src/f${i}`, Buffer.from(`content ${i}`));
      // What a killed run of an earlier version left: the target, the journal in its plain form, and
      // a copy whose ETag differs from its source's (as a part-by-part copy's does).
      await raw.expect('MKD dst', 257);
      await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: objectKey(server, 'dst/.s3ftp-rename'), Body: `${objectKey(server, 'src')}/` }));
      await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: objectKey(server, 'dst/f0'), Body: 'a copy, by its ETag' }));
      await raw.expect('RNFR src', 350);
      // Got: 451 on every run (the copy could not be told from a file stored since).
      await raw.expect('RNTO dst', 250);
      for (let i = 0; i < 3; i++) assert.equal((await fetch(raw, `dst/f${i}`)).toString(), `content ${i}`);
      raw.close();
    } finally {
      await server.close();
    }
  });

  test('run again after files were stored in the partial target: those files stay, and their sources stay too (451)', { ...T, skip: s3Driver.skip }, async () => {
    let copies = 0;
    let healed = false;
    const decide: ProxyDecide = ({ operation }) =>
      operation === 'CopyObject' && ++copies > 4 && !healed ? { status: 503, code: 'SlowDown' } : 'forward';
    const server = await startBehindS3Proxy(s3Driver, decide, { renameConcurrency: 1 });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      for (let i = 0; i < 8; i++) await send(raw, `STOR src/f${i}`, Buffer.from(`old ${i}`));
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      healed = true;
      // One at a time: the marker and f0, f1, f2 were copied. The user writes into the partial target.
      assert.equal((await fetch(raw, 'dst/f0')).toString(), 'old 0');
      await send(raw, 'STOR dst/f0', Buffer.from('new 0'));
      await send(raw, 'STOR dst/f6', Buffer.from('new 6'));
      await raw.expect('RNFR src', 350);
      // Got: 250, and dst/f0 and dst/f6 held "old 0" and "old 6": the user's newer files were gone.
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/f0')).toString(), 'new 0');
      assert.equal((await fetch(raw, 'dst/f6')).toString(), 'new 6');
      assert.deepEqual((await listing(raw, 'NLST src')).sort(), ['f0', 'f6']);
      for (const i of [1, 2, 3, 4, 5, 7]) assert.equal((await fetch(raw, `dst/f${i}`)).toString(), `old ${i}`);
      // The user decides: the old ones go, and the rename finishes.
      await raw.expect('DELE src/f0', 250);
      await raw.expect('DELE src/f6', 250);
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 250);
      assert.equal((await listing(raw, 'NLST src').catch(() => [])).length, 0);
      assert.deepEqual((await listing(raw, 'NLST dst')).sort(), ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7']);
      raw.close();
    } finally {
      await server.close();
    }
  });
  /** A server whose DeleteObjects requests S3 refuses (500) while `failing` says so, with that request's number (1, 2, …). */
  async function failingDeletes(failing: (n: number) => boolean): Promise<{ server: TestServer; close(): Promise<void> }> {
    let deletes = 0;
    const decide: ProxyDecide = ({ operation }) =>
      operation === 'DeleteObjects' && failing(++deletes) ? { status: 500, code: 'InternalError' } : 'forward';
    const server = await startBehindS3Proxy(s3Driver, decide);
    return { server, close: () => server.close() };
  }

  test('a run that stops while deleting the originals has recorded its copies: run again, it keeps a file stored in the target since (451)', { ...T, skip: s3Driver.skip }, async () => {
    let refuse = true;
    const { server, close } = await failingDeletes(() => refuse);
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      for (const n of ['x', 'y', 'z']) await send(raw, `STOR src/${n}`, Buffer.from(`old ${n}`));
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      refuse = false;
      await send(raw, 'STOR dst/x', Buffer.from('new x'));
      await raw.expect('RNFR src', 350);
      // Got: 250, and dst/x held "old x" again.
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/x')).toString(), 'new x');
      assert.deepEqual(await listing(raw, 'NLST src'), ['x']);
      for (const n of ['y', 'z']) assert.equal((await fetch(raw, `dst/${n}`)).toString(), `old ${n}`);
      raw.close();
    } finally {
      await close();
    }
  });

  test('a source the last run left, then the user deleted (keeping the copy), does not let a later run write over that copy', { ...T, skip: s3Driver.skip }, async () => {
    // The record written before the originals' delete is held, as a slow rename's would be.
    let journalPuts = 0;
    let held!: () => void;
    const holding = new Promise<void>((resolve) => (held = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const decide: ProxyDecide = async ({ method, url, operation }): Promise<ProxyVerdict> => {
      if (operation === 'PutObject' && method === 'PUT' && url.pathname.endsWith('.s3ftp-rename') && ++journalPuts === 2) {
        held();
        await released;
      }
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide);
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      await send(raw, 'STOR src/x', Buffer.from('first x'));
      await send(raw, 'STOR src/y', Buffer.from('y'));
      await raw.expect('RNFR src', 350);
      raw.socket.write('RNTO dst\r\n');
      await holding;
      // Another server (or S3 client) changes x once it has been copied: the run leaves it (451). Through this
      // server the upload would be refused (450) while the rename runs.
      await s3Driver.s3!.client.send(new PutObjectCommand({ Bucket: s3Driver.s3!.bucket, Key: objectKey(server, 'src/x'), Body: 'second x' }));
      release();
      assert.equal((await raw.read()).code, 451);
      // The user keeps the copy, as the 451 says, and removes the source.
      await raw.expect('DELE src/x', 250);
      await send(raw, 'STOR src/w', Buffer.from('w in src'));
      await send(other, 'STOR dst/w', Buffer.from('w in dst'));
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      await raw.expect('DELE dst/w', 250);
      await send(other, 'STOR src/x', Buffer.from('third x'));
      await raw.expect('RNFR src', 350);
      // Got: 250, and dst/x held "third x": the kept file was gone.
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/x')).toString(), 'first x');
      raw.close();
      other.close();
    } finally {
      release();
      await server.close();
    }
  });

  test('a run whose journal S3 will not take (no kill) still keeps a file stored in the target since', { ...T, skip: s3Driver.skip }, async () => {
    let journalPuts = 0;
    let faulty = true;
    const decide: ProxyDecide = ({ method, url, operation }): ProxyVerdict => {
      if (!faulty) return 'forward';
      if (operation === 'CopyObject' && url.pathname.endsWith('/y')) return { status: 503, code: 'SlowDown' };
      if (operation === 'PutObject' && method === 'PUT' && url.pathname.endsWith('.s3ftp-rename') && ++journalPuts >= 2) return { status: 503, code: 'SlowDown' };
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide, { renameConcurrency: 1 });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      await send(raw, 'STOR src/x', Buffer.from('old x'));
      await send(raw, 'STOR src/y', Buffer.from('y'));
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      faulty = false;
      await send(raw, 'STOR dst/x', Buffer.from('new x'));
      await raw.expect('RNFR src', 350);
      // Got: 250, and dst/x held "old x" (the first journal, with no record, stood for a kill).
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/x')).toString(), 'new x');
      raw.close();
    } finally {
      await server.close();
    }
  });

  test('a journal left by a finished rename (its own delete failed) lets no later rename write over the target', { ...T, skip: s3Driver.skip }, async () => {
    // The first DeleteObjects (the originals) goes through; the second (the journal) fails.
    let refuseSecond = true;
    const { server, close } = await failingDeletes((n) => refuseSecond && n >= 2);
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD src', 257);
      for (const n of ['x', 'y']) await send(raw, `STOR src/${n}`, Buffer.from(`first ${n}`));
      await raw.expect('RNFR src', 350);
      // Got: 451, though every object had moved.
      await raw.expect('RNTO dst', 250);
      refuseSecond = false;
      await raw.expect('MKD src', 257);
      await send(raw, 'STOR src/x', Buffer.from('second x'));
      await raw.expect('RNFR src', 350);
      // Got: 250, and dst/x held "second x": the first rename's file was gone.
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/x')).toString(), 'first x');
      assert.equal((await fetch(raw, 'src/x')).toString(), 'second x');
      // And on every later run. Got: 250 on the third (the second had recorded src/x as left).
      await raw.expect('RNFR src', 350);
      await raw.expect('RNTO dst', 451);
      assert.equal((await fetch(raw, 'dst/x')).toString(), 'first x');
      raw.close();
    } finally {
      await close();
    }
  });
});

/** The storage, with `before(n)` awaited each time the server asks it for listing page n (1, 2, …). */
function beforeListPages(storage: Storage, before: (page: number) => Promise<void>): Storage {
  async function* list(...args: Parameters<Storage['list']>): AsyncIterable<FileInfo[]> {
    const pages = storage.list(...args)[Symbol.asyncIterator]();
    try {
      for (let page = 1; ; page++) {
        await before(page);
        const next = await pages.next();
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await pages.return?.();
    }
  }
  return new Proxy(storage, {
    get: (target, name) => {
      if (name === 'list') return list;
      const value: unknown = Reflect.get(target, name, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function listing(raw: RawFtp, command: string): Promise<string[]> {
  const data = await raw.passive();
  const body = readAll(data);
  await raw.expect(command, 150);
  const names = (await body).toString().split('\r\n').filter(Boolean);
  assert.equal((await raw.read()).code, 226);
  return names;
}

async function listKeys(client: NonNullable<Driver['s3']>['client'], bucket: string, prefix: string): Promise<Set<string>> {
  const keys = new Set<string>();
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) keys.add(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** A full garbage collection, so a memory baseline holds no garbage of earlier tests. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** `size` bytes made on demand, so the test itself holds no big buffer. */
function generated(size: number): Readable {
  const chunk = pattern(MiB, 12);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(chunk.length, size - sent);
      sent += n;
      this.push(chunk.subarray(0, n));
    },
  });
}

describe('S3 failing or answering late, and keys written by other tools (s3)', async () => {
  const s3Driver = (await drivers()).find((d) => d.name === 's3')!;

  test('a publishing request whose answer is lost (S3 did the work, the SDK timed out and retried): 226 and the file as sent, appended once', { ...T, skip: s3Driver.skip }, async () => {
    // The first PutObject or CompleteMultipartUpload of each object reaches MinIO, which stores it;
    // its answer comes after the server's 1 s request timeout, and the SDK sends the request again.
    const late = new Set<string>();
    let holding = false;
    const decide: ProxyDecide = ({ operation, url }) => {
      if (!holding || !['PutObject', 'CompleteMultipartUpload'].includes(operation) || late.has(url.pathname)) return 'forward';
      late.add(url.pathname);
      return { answerAfterMs: 1500 };
    };
    const server = await startBehindS3Proxy(s3Driver, decide, { requestTimeoutMs: 1000 });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await send(raw, 'STOR big.bin', Buffer.from('old'));
      await send(raw, 'STOR appended.txt', Buffer.from('line1\n'));
      holding = true;
      const big = pattern(6 * 1024 * 1024, 7);
      // Got: 550 (the retried completion found no such upload), yet the 6 MiB file had replaced the old one.
      await send(raw, 'STOR big.bin', big);
      // Got: 451 for both (the retried conditional PutObject got 412), though each had been stored;
      // a client that tried the APPE again as told had line2 in the file twice.
      await send(raw, 'APPE created.txt', Buffer.from('new\n'));
      await send(raw, 'APPE appended.txt', Buffer.from('line2\n'));
      holding = false;
      assert.ok((await fetch(raw, 'big.bin')).equals(big));
      assert.equal((await fetch(raw, 'created.txt')).toString(), 'new\n');
      assert.equal((await fetch(raw, 'appended.txt')).toString(), 'line1\nline2\n');
      assert.equal(late.size, 3);
      raw.close();
      await noDanglingUploads(s3Driver, server);
    } finally {
      await server.close();
    }
  });

  test('a publishing request whose answer is lost, and S3 will not say whether it landed: 451 that says to look before sending again', { ...T, skip: s3Driver.skip }, async () => {
    let phase: 'normal' | 'hold' | 'refuse-head' = 'normal';
    const decide: ProxyDecide = ({ operation }): ProxyVerdict => {
      if (phase === 'hold' && operation === 'PutObject') {
        phase = 'refuse-head';
        return { answerAfterMs: 1500 };
      }
      if (phase === 'refuse-head' && operation === 'HeadObject') return { status: 503, code: 'SlowDown' };
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide, { requestTimeoutMs: 1000 });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await send(raw, 'STOR log.txt', Buffer.from('line1\n'));
      const data = await raw.passive();
      await raw.expect('APPE log.txt', 150);
      phase = 'hold';
      data.end('line2\n');
      // Got: "451 Storage unavailable, try again later." though the append had landed: tried again, line2 twice.
      const done = await raw.read(30_000);
      assert.equal(done.code, 451);
      assert.equal(done.text, 'The storage did not confirm the upload; check the file (SIZE) before sending it again.');
      phase = 'normal';
      assert.equal((await fetch(raw, 'log.txt')).toString(), 'line1\nline2\n');
      raw.close();
    } finally {
      await server.close();
    }
  });

  test('RMD of a directory another session is uploading into answers 550, whether the upload began before the RMD or during it; an upload into a directory being renamed is refused (450)', { ...T, skip: s3Driver.skip }, async () => {
    // The next request of an operation is held at the proxy until opened.
    const gates = new Map<string, { reached: () => void; release: Promise<void> }>();
    const opens: Array<() => void> = [];
    const gate = (operation: string) => {
      let reached!: () => void;
      let open!: () => void;
      const hit = new Promise<void>((resolve) => (reached = resolve));
      gates.set(operation, { reached, release: new Promise<void>((resolve) => (open = resolve)) });
      opens.push(open);
      return { hit, open };
    };
    const decide: ProxyDecide = async ({ operation }): Promise<ProxyVerdict> => {
      const held = gates.get(operation);
      if (held) {
        gates.delete(operation);
        held.reached();
        await held.release;
      }
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide);
    try {
      const uploader = await RawFtp.login(server.port, USER, PASSWORD);
      const remover = await RawFtp.login(server.port, USER, PASSWORD);
      // An upload still being published when the RMD comes.
      await remover.expect('MKD before', 257);
      const put = gate('PutObject');
      const data = await uploader.passive();
      await uploader.expect('STOR before/f', 150);
      data.end('uploaded');
      await put.hit;
      // Got: 250, then the upload landed and the directory was back, with a 550 for the next MKD of it.
      await remover.expect('RMD before', 550);
      put.open();
      assert.equal((await uploader.read()).code, 226);
      await remover.expect('DELE before/f', 250);
      await remover.expect('RMD before', 250);
      // An upload that starts, and lands, while the RMD removes the marker.
      await remover.expect('MKD during', 257);
      const removal = gate('DeleteObjects');
      remover.socket.write('RMD during\r\n');
      await removal.hit;
      await send(uploader, 'STOR during/f', Buffer.from('uploaded'));
      removal.open();
      assert.equal((await remover.read()).code, 550);
      // The directory is whole: its file, and its marker once the file goes.
      assert.deepEqual(await listing(remover, 'NLST during'), ['f']);
      await remover.expect('DELE during/f', 250);
      await remover.expect('CWD during', 250);
      await remover.expect('CWD /', 250);
      // An upload that starts while a directory rename copies its objects is refused before its 150 (450).
      await remover.expect('MKD moving', 257);
      await send(remover, 'STOR moving/kept', Buffer.from('kept'));
      const copy = gate('CopyObject');
      await remover.expect('RNFR moving', 350);
      remover.socket.write('RNTO moved\r\n');
      await copy.hit;
      // Got: 150 and 226, and the file under the old name after the rename's 250 (the old directory back).
      const unused = await uploader.passive();
      assert.equal((await uploader.send('STOR moving/late')).code, 450);
      unused.destroy();
      copy.open();
      assert.equal((await remover.read()).code, 250);
      assert.deepEqual(await listing(remover, 'NLST moved'), ['kept']);
      await remover.expect('CWD moving', 550);
      uploader.close();
      remover.close();
    } finally {
      for (const open of opens) open();
      await server.close();
    }
  });

  test('a directory that is only a key prefix stays when its last file or subdirectory goes (DELE, RNFR/RNTO, RMD), until RMD removes it', { ...T, skip: s3Driver.skip }, async () => {
    const server = await startTestServer(s3Driver);
    try {
      const s3 = s3Driver.s3!;
      // As `aws s3 cp` writes them: keys alone, no `dir/` marker.
      for (const path of ['imp/only.txt', 'moved/only.txt', 'nested/sub/x.txt', 'outer/inner/y.txt']) {
        await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: objectKey(server, path), Body: path }));
      }
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('CWD /imp', 250);
      await raw.expect('DELE only.txt', 250);
      // Got: 550 for each (the directory had vanished with its last key): lftp's rm -r and rclone purge failed.
      assert.deepEqual(await listing(raw, 'LIST'), []);
      await send(raw, 'STOR new.txt', Buffer.from('n'));
      await raw.expect('DELE new.txt', 250);
      await raw.expect('CWD /', 250);
      await raw.expect('RMD imp', 250);
      // A rename out of it.
      await raw.expect('RNFR moved/only.txt', 350);
      await raw.expect('RNTO only-moved.txt', 250);
      await raw.expect('RMD moved', 250);
      // Its only subdirectory removed, or renamed away.
      await raw.expect('DELE nested/sub/x.txt', 250);
      await raw.expect('RMD nested/sub', 250);
      await raw.expect('RMD nested', 250);
      await raw.expect('RNFR outer/inner', 350);
      await raw.expect('RNTO inner', 250);
      await raw.expect('RMD outer', 250);
      assert.deepEqual((await listing(raw, 'NLST')).sort(), ['inner', 'only-moved.txt']);
      raw.close();
    } finally {
      await server.close();
    }
  });

  test('copies S3 is slow to answer never hold the sockets another session LISTs and STORs with', { ...T, skip: s3Driver.skip }, async () => {
    // Every copy is held until the other session is done (or 10 s have passed).
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held = 0;
    const decide: ProxyDecide = async ({ operation }): Promise<ProxyVerdict> => {
      if (operation !== 'CopyObject' && operation !== 'UploadPartCopy') return 'forward';
      held++;
      await Promise.race([released, new Promise((r) => setTimeout(r, 10_000))]);
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide, { renameConcurrency: 100 });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD many', 257);
      for (let i = 0; i < 100; i++) await send(raw, `STOR many/f${i}`, Buffer.from(`${i}`));
      await raw.expect('RNFR many', 350);
      raw.socket.write('RNTO moved\r\n');
      // As many as can be in flight (the copies' own 32, or before them all 64 sockets of the short requests).
      while (held < 32) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 500));
      // Got: the LIST waited for the copies, which held all 64 sockets of the short requests.
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      const done = (async () => {
        assert.ok((await listing(other, 'NLST')).includes('many'));
        await send(other, 'STOR beside.txt', Buffer.from('b'));
        return 'done';
      })();
      const first = await Promise.race([done, new Promise((r) => setTimeout(() => r('timed out'), 5000))]);
      release();
      assert.equal(first, 'done');
      assert.equal((await raw.read()).code, 250);
      assert.equal((await listing(other, 'NLST moved')).length, 100);
      raw.close();
      other.close();
    } finally {
      release();
      await server.close();
    }
  });

  test("S3 stalling during an upload the client is still sending: the reply is the storage's (451), the old file stays and no upload is left", { ...T, skip: s3Driver.skip }, async () => {
    let stalled = false;
    let heal!: () => void;
    const healed = new Promise<void>((resolve) => (heal = resolve));
    const decide: ProxyDecide = async ({ operation }): Promise<ProxyVerdict> => {
      if (stalled && (operation === 'UploadPart' || operation === 'AbortMultipartUpload')) await healed;
      return 'forward';
    };
    const server = await startBehindS3Proxy(s3Driver, decide, { requestTimeoutMs: 1000 }, {}, { storageOptions: { abortRetryMs: 300 } });
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await send(raw, 'STOR kept.bin', Buffer.from('old'));
      stalled = true;
      const data = await raw.passive();
      await raw.expect('STOR kept.bin', 150);
      // More than the parts in flight can hold: the client is still sending when the parts time out.
      data.end(Buffer.alloc(40 * MiB, 1));
      const done = await raw.read(60_000);
      // Got: 426 (the body the storage gave up on read as a failed data connection).
      assert.equal(done.code, 451, done.text);
      stalled = false;
      heal();
      assert.equal((await fetch(raw, 'kept.bin')).toString(), 'old');
      const deadline = Date.now() + 20_000;
      while ((await s3Driver.danglingUploads(server.storageConfig)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      await noDanglingUploads(s3Driver, server);
      raw.close();
    } finally {
      heal();
      await server.close();
    }
  });
});
