import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { basicFtp, getFile, putFile, RawFtp, readAll } from './helpers/ftp.js';
import { drivers, noDanglingUploads, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';
import { unreachableS3Config } from './helpers/minio.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

for (const driver of await drivers()) {
  describe(`robustness (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver);
    });
    after(async () => {
      await server?.close();
    });

    const put = (name: string, content: Buffer) => putFile(server.port, USER, PASSWORD, name, content);
    const get = (name: string) => getFile(server.port, USER, PASSWORD, name);

    // More than one 8 MiB part, so the S3 driver is in the middle of a multipart upload.
    const CUT_AFTER = 12 * 1024 * 1024;

    for (const how of ['data connection reset', 'control connection closed', 'ABOR'] as const) {
      test(`a STOR cut off in the middle (${how}) keeps the previous content and leaves no upload behind`, async () => {
        const name = `cut-${how.replace(/ /g, '-')}.bin`;
        const original = randomBytes(1000);
        await put(name, original);
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const data = await raw.passive();
        await raw.expect(`STOR ${name}`, 150);
        await new Promise<void>((resolve) => data.write(randomBytes(CUT_AFTER), () => resolve()));
        await new Promise((r) => setTimeout(r, 500));
        if (how === 'data connection reset') {
          data.resetAndDestroy();
          assert.equal((await raw.read()).code, 426);
        } else if (how === 'ABOR') {
          raw.socket.write('ABOR\r\n');
          assert.equal((await raw.read()).code, 426);
          assert.equal((await raw.read()).code, 226);
          data.destroy();
        } else {
          // The client vanishes; its data connection is left open, then dropped.
          raw.close();
          await new Promise((r) => setTimeout(r, 300));
          data.destroy();
        }
        raw.close();
        // The abort runs asynchronously after the client is gone; give it a bounded moment.
        await noDanglingUploads(driver, server);
        assert.deepEqual(await get(name), original);
      });
    }

    test('16 concurrent sessions each store and fetch their own file', async () => {
      const results = await Promise.all(
        Array.from({ length: 16 }, async (_, i) => {
          const client = await basicFtp(server.port, USER, PASSWORD, i % 2 ? 'active' : 'passive');
          const body = randomBytes(256 * 1024 + i);
          await client.uploadFrom(Readable.from([body]), `concurrent-${i}.bin`);
          const chunks: Buffer[] = [];
          await client.downloadTo(
            new Writable({
              write(chunk: Buffer, _e, done) {
                chunks.push(chunk);
                done();
              },
            }),
            `concurrent-${i}.bin`,
          );
          client.close();
          return sha256(Buffer.concat(chunks)) === sha256(body);
        }),
      );
      assert.deepEqual(results, Array(16).fill(true));
    });

    test('a client that vanishes mid-RETR does not disturb the others', async () => {
      await put('vanish.bin', randomBytes(4 * 1024 * 1024));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const data = await raw.passive();
      await raw.expect('RETR vanish.bin', 150);
      data.destroy();
      raw.close();
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      await other.expect('NOOP', 200);
      assert.equal((await get('vanish.bin')).length, 4 * 1024 * 1024);
      other.close();
    });
  });
}

describe('storage failures', () => {
  test('an unreachable S3 endpoint answers 451 and the session stays usable', async () => {
    const server = await startTestServer(
      {
        name: 's3',
        storageConfig: () => unreachableS3Config(),
        danglingUploads: async () => [],
      },
    );
    try {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('CWD somewhere', 451);
      await raw.expect('MKD something', 451);
      await raw.expect('NOOP', 200);
      raw.close();
    } finally {
      await server.close();
    }
  });
});
