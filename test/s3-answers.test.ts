import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { S3Storage } from '../src/storage/s3.js';
import type { StorageError } from '../src/storage/types.js';
import { RawFtp, readAll, store } from './helpers/ftp.js';
import { startS3Proxy, type ProxiedAnswer, type ProxyDecide } from './helpers/s3-proxy.js';
import { drivers, PASSWORD, startBehindS3Proxy, USER, type TestServer } from './helpers/server.js';

/**
 * S3, or something between the server and it (a cache, a compressing or
 * broken proxy, a store that is S3 only in name), answering a request
 * otherwise than asked. Whatever it answers, a client never gets 226 (or
 * 213, or 250) for bytes, a listing or a rename that are not what S3 holds:
 * the reply is 451. S3 itself is never mocked: every request reaches MinIO,
 * and the test proxy changes its answer on the way back.
 */
const [, s3Driver] = await drivers();
const T = { timeout: 120_000, skip: s3Driver?.skip };

/** A server whose S3 requests go through a proxy that answers as `decide` says, and time out after `requestTimeoutMs`. */
function serverBehind(decide: ProxyDecide, storageOptions = {}, requestTimeoutMs = 3000): Promise<TestServer> {
  return startBehindS3Proxy(s3Driver!, decide, { requestTimeoutMs }, {}, { storageOptions });
}

/** RETR (after REST `from`, if given): the final reply's code and the bytes the client got. */
async function retr(ftp: RawFtp, name: string, from?: number): Promise<{ code: number; body: Buffer }> {
  const data = await ftp.passive();
  if (from !== undefined) await ftp.expect(`REST ${from}`, 350);
  const body = readAll(data);
  const first = await ftp.send(`RETR ${name}`);
  if (first.code !== 150) {
    body.catch(() => undefined);
    data.destroy();
    return { code: first.code, body: Buffer.alloc(0) };
  }
  const got = await body;
  return { code: (await ftp.read(30_000)).code, body: got };
}

const withoutLength = ({ 'content-length': _, ...headers }: ProxiedAnswer['headers']) => headers;

type Rewrite = (answer: ProxiedAnswer) => ProxiedAnswer;

/** A server whose GET answers the test may rewrite (`rewriteGets`), a session on it, and `content` stored as `name`. */
async function storedBehindGets(name: string, content: Buffer) {
  let rewrite: Rewrite | undefined;
  const behind = await serverBehind(({ operation }) => (operation === 'GetObject' && rewrite ? { rewrite } : 'forward'));
  const ftp = await RawFtp.login(behind.port, USER, PASSWORD).catch(async (err: unknown) => {
    await behind.close();
    throw err;
  });
  assert.equal(await store(ftp, name, content), 226);
  return {
    ftp,
    rewriteGets: (next: Rewrite | undefined) => void (rewrite = next),
    async close() {
      ftp.close();
      await behind.close();
    },
  };
}

describe('S3 answers that are not what was asked for (S3)', { skip: s3Driver?.skip }, () => {
  test('a GET answered with other bytes than the range asked for never ends in 226', T, async () => {
    const content = randomBytes(300_001);
    const { ftp, rewriteGets, close } = await storedBehindGets('object.bin', content);
    try {
      const cases: Array<[string, Rewrite, number | undefined]> = [
        // A cache or store that ignores Range (RFC 9110 allows it): the whole object, 200.
        ['the Range ignored', (a) => ({ status: 200, headers: { ...withoutLength(a.headers), 'content-range': undefined, 'content-length': String(content.length) }, body: content }), 1000],
        // The range starts elsewhere, and says so.
        ['another start', (a) => ({ ...a, headers: { ...a.headers, 'content-range': `bytes 0-${content.length - 1001}/${content.length}` }, body: content.subarray(0, content.length - 1000) }), 1000],
        // Another version of the object than the HEAD saw (a store that ignores If-Match).
        ['another version', (a) => ({ ...a, headers: { ...a.headers, etag: '"0123456789abcdef0123456789abcdef"' } }), undefined],
        // More bytes than the object has, sent without a length (chunked).
        ['bytes past the end', (a) => ({ ...a, headers: withoutLength(a.headers), body: Buffer.concat([a.body, Buffer.from('TRAILING')]) }), undefined],
      ];
      for (const [what, change, from] of cases) {
        rewriteGets(change);
        const { code, body } = await retr(ftp, 'object.bin', from);
        // Got: 226 with the whole object after REST 1000, 1000 bytes twice, the other version, the trailing bytes.
        assert.equal(code, 451, `${what}: ${code}, ${body.length} bytes`);
      }
      rewriteGets(undefined);
      const { code, body } = await retr(ftp, 'object.bin', 1000);
      assert.equal(code, 226);
      assert.ok(body.equals(content.subarray(1000)));
    } finally {
      await close();
    }
  });

  test('REST+STOR and APPE keep exactly the bytes asked for, or fail (451) and leave the file as it was', T, async () => {
    const content = randomBytes(300_001);
    const { ftp, rewriteGets, close } = await storedBehindGets('kept.bin', content);
    try {
      const cases: Array<[string, Rewrite, string]> = [
        ['the Range ignored', (a) => ({ status: 200, headers: { ...withoutLength(a.headers), 'content-range': undefined, 'content-length': String(content.length) }, body: content }), 'REST 1000'],
        ['a body that ends early, chunked', (a) => ({ ...a, headers: withoutLength(a.headers), body: a.body.subarray(0, 10) }), 'REST 1000'],
        ['a body that ends early, chunked', (a) => ({ ...a, headers: withoutLength(a.headers), body: a.body.subarray(0, 10) }), 'APPE'],
      ];
      for (const [what, change, how] of cases) {
        rewriteGets(change);
        const data = await ftp.passive();
        if (how !== 'APPE') await ftp.expect(how, 350);
        // The kept bytes are asked for before the 150 (a refusal then comes alone) and read after it.
        let reply = await ftp.send(how === 'APPE' ? 'APPE kept.bin' : 'STOR kept.bin');
        if (reply.code === 150) {
          data.end('NEW-TAIL');
          reply = await ftp.read(30_000);
        } else data.destroy();
        // Got: 226, and the object replaced by the whole old one plus the tail, or by 10 bytes plus the tail.
        assert.equal(reply.code, 451, `${how}, ${what}`);
        rewriteGets(undefined);
        const { body } = await retr(ftp, 'kept.bin');
        assert.ok(body.equals(content), `${how}, ${what}: the file is as it was`);
      }
    } finally {
      await close();
    }
  });

  test('HASH of a body that ends early, and SIZE of an object whose HEAD gives no length, answer 451', T, async () => {
    let rewriteGet: Rewrite | undefined;
    let rewriteHead: Rewrite | undefined;
    const server = await serverBehind(({ operation }) => {
      if (operation === 'GetObject' && rewriteGet) return { rewrite: rewriteGet };
      if (operation === 'HeadObject' && rewriteHead) return { rewrite: rewriteHead };
      return 'forward';
    });
    try {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal(await store(ftp, 'hashed.bin', randomBytes(300_001)), 226);
      await ftp.expect('OPTS HASH MD5', 200); // not stored: HASH reads the object
      // A body cut short with a clean end, and no checksum headers for the SDK to check it against.
      rewriteGet = (a) => ({
        ...a,
        headers: Object.fromEntries(Object.entries(withoutLength(a.headers)).filter(([name]) => !name.startsWith('x-amz-checksum'))),
        body: a.body.subarray(0, 1000),
      });
      // Got: 213 MD5 0-1000 …
      await ftp.expect('HASH hashed.bin', 451);
      rewriteGet = undefined;
      // RFC 9110 lets a HEAD leave the length out; it is not a 0-byte file.
      rewriteHead = (a) => ({ ...a, headers: withoutLength(a.headers) });
      // Got: 213 0, and a RETR that sent 0 bytes with 226.
      await ftp.expect('SIZE hashed.bin', 451);
      assert.notEqual((await retr(ftp, 'hashed.bin')).code, 226);
      rewriteHead = undefined;
      assert.equal((await ftp.expect('SIZE hashed.bin', 213)).text, '300001');
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('a listing whose store repeats its continuation token, says there is more with no token, or sends empty pages with new tokens for good, answers 451; so does a directory rename', T, async () => {
    let mode: 'repeat' | 'no-token' | 'empty' | undefined;
    let fresh = 0;
    let firstPage: Buffer | undefined;
    const server = await serverBehind(
      ({ operation, url }) => {
        if (operation !== 'ListObjectsV2' || !mode || !url.searchParams.get('prefix')?.includes('/paged/')) return 'forward';
        return {
          rewrite: (a) => {
            if (url.searchParams.has('continuation-token') && mode === 'repeat') return { status: 200, headers: withoutLength(a.headers), body: firstPage! };
            if (url.searchParams.has('continuation-token') && mode === 'empty') {
              // An empty page that says there is more, under a new token each time.
              const empty = `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><KeyCount>0</KeyCount><IsTruncated>true</IsTruncated><NextContinuationToken>fresh${++fresh}</NextContinuationToken></ListBucketResult>`;
              return { status: 200, headers: withoutLength(a.headers), body: Buffer.from(empty) };
            }
            let body = a.body.toString();
            if (mode === 'repeat') body = body.replace(/<NextContinuationToken>[^<]*<\/NextContinuationToken>/, '<NextContinuationToken>SAME</NextContinuationToken>');
            else if (mode === 'empty') body = body.replace(/<NextContinuationToken>[^<]*<\/NextContinuationToken>/, `<NextContinuationToken>fresh${++fresh}</NextContinuationToken>`);
            else body = body.replace(/<NextContinuationToken>[^<]*<\/NextContinuationToken>/, '');
            firstPage = Buffer.from(body);
            return { ...a, headers: withoutLength(a.headers), body: firstPage };
          },
        };
      },
      { pageSize: 2 },
    );
    try {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      await ftp.expect('MKD paged', 257);
      for (let i = 0; i < 5; i++) assert.equal(await store(ftp, `paged/f${i}.txt`, `file ${i}`), 226);
      for (const m of ['repeat', 'no-token', 'empty'] as const) {
        mode = m;
        for (const command of ['LIST paged', 'NLST paged', 'MLSD paged']) {
          const data = await ftp.passive();
          const body = readAll(data).catch(() => undefined);
          // The first page is read before the 150: a refusal then comes alone.
          let reply = await ftp.send(command);
          if (reply.code === 150) reply = await ftp.read(30_000);
          else data.destroy();
          // Got: a LIST that never ended (repeat), or 226 for the first page alone (no token).
          assert.equal(reply.code, 451, `${m}: ${command}`);
          await body;
        }
        await ftp.expect('RNFR paged', 350);
        // Got: no reply, the heap growing until the process died (repeat); 250 with 3 files left behind (no token).
        assert.equal((await ftp.send('RNTO moved')).code, 451, `${m}: RNTO`);
      }
      mode = undefined;
      await ftp.expect('RNFR paged', 350);
      await ftp.expect('RNTO moved', 250);
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('directory dates S3 does not answer hold a listing a few seconds at most: it goes out with the epoch for them', T, async () => {
    let holdMarkers = false;
    const server = await serverBehind(
      ({ operation, url }) => (holdMarkers && operation === 'HeadObject' && url.pathname.endsWith('/') ? { answerAfterMs: 120_000 } : 'forward'),
      {},
      60_000,
    );
    try {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      await ftp.expect('MKD dated', 257);
      for (let i = 0; i < 40; i++) await ftp.expect(`MKD dated/d${i}`, 257);
      holdMarkers = true;
      const data = await ftp.passive();
      const body = readAll(data);
      // Got: the 150 after every HEAD had waited out the request timeout, 16 at a time (40 s with a 3 s timeout).
      await ftp.expect('LIST dated', 150);
      const lines = (await body).toString().split('\r\n').filter(Boolean);
      assert.equal((await ftp.read(20_000)).code, 226);
      assert.equal(lines.length, 40);
      assert.ok(lines.every((line) => / 1970 d\d+$/.test(line)), lines[0]);
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('the sweep of upload leftovers stops (Unavailable) when the store repeats its listing marker', T, async () => {
    const base = s3Driver!.storageConfig();
    assert.equal(base.kind, 's3');
    const proxy = await startS3Proxy(base.endpoint!, ({ operation }) =>
      operation === 'ListMultipartUploads'
        ? {
            rewrite: (a) => {
              const body = a.body
                .toString()
                .replace('<IsTruncated>false</IsTruncated>', '<IsTruncated>true</IsTruncated>')
                .replace(/<NextKeyMarker>[^<]*<\/NextKeyMarker>/, '<NextKeyMarker>again</NextKeyMarker>');
              return { ...a, headers: withoutLength(a.headers), body: Buffer.from(body) };
            },
          }
        : 'forward',
    );
    const storage = new S3Storage({ ...base, endpoint: proxy.endpoint });
    try {
      // Got: the same page asked for again and again, for good (every hour, from a timer).
      await assert.rejects(storage.sweep(0), (err: StorageError) => err.code === 'Unavailable');
    } finally {
      await storage.close();
      await proxy.close();
    }
  });
});
