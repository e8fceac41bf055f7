import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3StorageConfig } from '../src/config/index.js';
import { RawFtp, readAll } from './helpers/ftp.js';
import { getS3, listMultipartUploads, restartMinio, stopMinio } from './helpers/minio.js';
import { drivers, PASSWORD, startTestServer, USER } from './helpers/server.js';

const s3 = await getS3();
const [, s3Driver] = await drivers();
const MiB = 1024 * 1024;

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test(
  'MinIO stopped during transfers: they fail with 451/426, other sessions are served, uploads are cleaned up when it returns, and the server recovers by itself',
  { skip: s3 && s3Driver ? false : 'no MinIO', timeout: 120_000 },
  async () => {
    const env = s3!;
    const logLines: string[] = [];
    const server = await startTestServer(
      s3Driver!,
      { dataTimeoutMs: 30_000 },
      { storageOptions: { abortRetryMs: 300 }, logLines },
    );
    const { prefix } = server.storageConfig as S3StorageConfig;
    const key = (name: string) => `${prefix}/${name}`;
    try {
      // A big object to download, written directly.
      await env.client.send(new PutObjectCommand({ Bucket: env.bucket, Key: key('big.bin'), Body: Buffer.alloc(64 * MiB, 7) }));

      const uploader = await RawFtp.login(server.port, USER, PASSWORD);
      await uploader.expect('TYPE I', 200);
      const up = await uploader.passive();
      await uploader.expect('STOR up.bin', 150);
      up.write(Buffer.alloc(6 * MiB, 1)); // past the first 5 MiB part: a multipart upload exists

      const downloader = await RawFtp.login(server.port, USER, PASSWORD);
      await downloader.expect('TYPE I', 200);
      const down = await downloader.passive();
      down.pause(); // a slow reader: the download is still streaming when storage goes
      await downloader.expect('RETR big.bin', 150);

      const bystander = await RawFtp.login(server.port, USER, PASSWORD);
      await until('the first part is uploaded', async () => (await listMultipartUploads(env, prefix)).length > 0);

      await stopMinio();

      // The upload fails once the client finishes sending.
      up.end(Buffer.alloc(1 * MiB, 2));
      const stor = await uploader.read(60_000);
      assert.ok([451, 426].includes(stor.code), `STOR got ${stor.code} ${stor.text}`);

      // The download fails: its stream from storage is cut.
      down.resume();
      const received = await readAll(down);
      const retr = await downloader.read(60_000);
      assert.ok([451, 426].includes(retr.code), `RETR got ${retr.code} ${retr.text}`);
      assert.ok(received.length < 64 * MiB, 'the download did not complete');

      // Other sessions are still served: commands that need no storage succeed,
      // those that do fail with 451 in bounded time, and new logins work.
      await bystander.expect('NOOP', 200);
      await bystander.expect('PWD', 257);
      await bystander.expect('SIZE big.bin', 451);
      const late = await RawFtp.login(server.port, USER, PASSWORD);
      await late.expect('NOOP', 200);

      await restartMinio();

      // Recovered by itself: the same sessions work again.
      await until('storage answers again', async () => (await bystander.send('SIZE big.bin')).code === 213);
      await bystander.expect('TYPE I', 200);
      const data = await bystander.passive();
      await bystander.expect('STOR after.txt', 150);
      data.end('back');
      await once(data, 'close');
      assert.equal((await bystander.read()).code, 226);
      const head = await env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: key('after.txt') }));
      assert.equal(head.ContentLength, 4);

      // The failed upload left no object, and its multipart upload is removed once storage is back.
      await assert.rejects(env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: key('up.bin') })), { name: 'NotFound' });
      await until('no multipart upload is left', async () => (await listMultipartUploads(env, prefix)).length === 0);
      const events = logLines.map((line) => (JSON.parse(line) as { event?: string }).event);
      assert.ok(events.includes('abort-deferred') && events.includes('abort-retried'), 'the abort failed while storage was down, and was retried');

      for (const ftp of [uploader, downloader, bystander, late]) ftp.close();
    } finally {
      await server.close();
    }
  },
);
