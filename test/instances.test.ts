import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { Client } from 'basic-ftp';
import { basicFtp } from './helpers/ftp.js';
import { getS3 } from './helpers/minio.js';
import { childEnv, s3Settings, startServerProcess, type ServerProcess } from './helpers/process.js';

const USER = 'shared';
const PASSWORD = 'two instances, one bucket';

async function download(client: Client, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await client.downloadTo(
    new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk);
        done();
      },
    }),
    path,
  );
  return Buffer.concat(chunks);
}

const s3 = await getS3();

describe('two server processes on one bucket', { skip: s3 ? undefined : 'MinIO is not available' }, () => {
  const servers: ServerProcess[] = [];
  const clients: Client[] = [];

  before(async () => {
    // Two real processes, as two containers would be: same bucket and prefix, own ports.
    const env = childEnv({
      ...s3Settings(s3!, `instances-${randomBytes(4).toString('hex')}`),
      FTP_PORT: '0',
      FTP_USER: USER,
      FTP_PASSWORD: PASSWORD,
      LOG_LEVEL: 'info',
    });
    servers.push(...(await Promise.all([startServerProcess(env), startServerProcess(env)])));
  });
  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(servers.map((s) => s.stop()));
  });

  test('a file uploaded through one is listed, downloaded and renamed through the other', async () => {
    const [a, b] = servers;
    assert.ok(a && b && a.port !== b.port);
    const one = await basicFtp(a.port, USER, PASSWORD, 'passive');
    const two = await basicFtp(b.port, USER, PASSWORD, 'passive');
    clients.push(one, two);

    const body = randomBytes(300_000);
    await one.ensureDir('/shared/in');
    await one.uploadFrom(Readable.from([body]), 'report.bin');

    await two.cd('/shared/in');
    const listed = await two.list();
    assert.deepEqual(listed.map((f) => [f.name, f.size]), [['report.bin', body.length]]);
    assert.ok((await download(two, 'report.bin')).equals(body));
    await two.rename('report.bin', '/shared/done.bin');

    // And the first instance sees the rename at once: it caches nothing.
    assert.deepEqual((await one.list('/shared/in')).map((f) => f.name), []);
    assert.ok((await download(one, '/shared/done.bin')).equals(body));
    await one.remove('/shared/done.bin');
    assert.deepEqual((await two.list('/shared')).map((f) => f.name), ['in']);

    // Each server logged its own side of it.
    const transfers = (s: ServerProcess) => s.logs.filter((l) => l.event === 'transfer').map((l) => `${String(l.direction)} ${String(l.path)}`);
    assert.ok(transfers(a).includes('upload /shared/in/report.bin'));
    assert.ok(transfers(b).includes('download /shared/in/report.bin'));
  });
});
