import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { connect } from 'node:net';
import { test } from 'node:test';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { RawFtp } from './helpers/ftp.js';
import { getS3, listMultipartUploads } from './helpers/minio.js';
import { childEnv, s3Settings, startServerProcess } from './helpers/process.js';

const s3 = await getS3();
const MiB = 1024 * 1024;

test('SIGTERM: stops accepting, idle sessions get 421, a transfer finishing within the grace period completes, the rest are aborted cleanly, exit 0', { skip: s3 ? false : 'no MinIO', timeout: 60_000 }, async () => {
  const env = s3!;
  const prefix = `shutdown-${Date.now()}`;
  const server = await startServerProcess(
    childEnv({ ...s3Settings(env, prefix), FTP_PORT: '0', FTP_USER: 'alice', FTP_PASSWORD: 'shutdown-test-pw', FTP_SHUTDOWN_GRACE: '3' }),
  );
  const idle = await RawFtp.login(server.port, 'alice', 'shutdown-test-pw');

  const startUpload = async (name: string) => {
    const ftp = await RawFtp.login(server.port, 'alice', 'shutdown-test-pw');
    await ftp.expect('TYPE I', 200);
    const data = await ftp.passive();
    await ftp.expect(`STOR ${name}`, 150);
    // More than one 5 MiB part, so a multipart upload is under way on S3.
    data.write(Buffer.alloc(6 * MiB, 1));
    return { ftp, data };
  };
  const finishing = await startUpload('finishing.bin');
  const stalled = await startUpload('stalled.bin');
  await new Promise((r) => setTimeout(r, 500));

  const exited = once(server.child, 'exit') as Promise<[number | null, string | null]>;
  server.child.kill('SIGTERM');

  // The idle session is told at once.
  const bye = await idle.read(5000);
  assert.equal(bye.code, 421);

  // No new connections.
  await new Promise((r) => setTimeout(r, 200));
  const refused = await new Promise<string>((resolve) => {
    const socket = connect({ port: server.port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
  assert.equal(refused, 'ECONNREFUSED');

  // A transfer that ends within the grace period completes: 226, then 421.
  finishing.data.end(Buffer.alloc(1 * MiB, 2));
  assert.equal((await finishing.ftp.read(10_000)).code, 226);
  assert.equal((await finishing.ftp.read(10_000)).code, 421);

  // One that does not is aborted when the grace period ends: 426, then 421.
  assert.equal((await stalled.ftp.read(10_000)).code, 426);
  assert.equal((await stalled.ftp.read(10_000)).code, 421);
  stalled.data.destroy();

  const [code] = await exited;
  assert.equal(code, 0);
  assert.ok(server.logs.some((l) => l.event === 'shutdown' && l.signal === 'SIGTERM'));

  const head = await env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: `${prefix}/finishing.bin` }));
  assert.equal(head.ContentLength, 7 * MiB);
  await assert.rejects(env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: `${prefix}/stalled.bin` })), { name: 'NotFound' });
  assert.deepEqual(await listMultipartUploads(env, prefix), []);
  idle.close();
  finishing.ftp.close();
  stalled.ftp.close();
});

test('SIGTERM while a resume copies its kept prefix and a rename copies a big object: both are stopped and leave no multipart upload', { skip: s3 ? false : 'no MinIO', timeout: 90_000 }, async () => {
  const env = s3!;
  const prefix = `shutdown-copy-${Date.now()}`;
  const size = 160 * MiB;
  const body = Buffer.alloc(size, 7);
  for (const name of ['resumed.bin', 'renamed.bin']) {
    await env.client.send(new PutObjectCommand({ Bucket: env.bucket, Key: `${prefix}/${name}`, Body: body }));
  }
  const server = await startServerProcess(
    childEnv({
      ...s3Settings(env, prefix),
      FTP_PORT: '0',
      FTP_USER: 'alice',
      FTP_PASSWORD: 'shutdown-test-pw',
      FTP_SHUTDOWN_GRACE: '0',
      // A rename of anything over 5 MiB is a multipart copy.
      S3_MULTIPART_COPY_THRESHOLD_MB: '5',
    }),
  );
  const resume = await RawFtp.login(server.port, 'alice', 'shutdown-test-pw');
  await resume.expect('TYPE I', 200);
  const data = await resume.passive();
  await resume.expect(`REST ${size - MiB}`, 350);
  const rename = await RawFtp.login(server.port, 'alice', 'shutdown-test-pw');
  await rename.expect('RNFR renamed.bin', 350);
  // Both commands are now inside their server-side copies (UploadPartCopy), before any reply.
  resume.socket.write('STOR resumed.bin\r\n');
  rename.socket.write('RNTO moved.bin\r\n');
  await new Promise((r) => setTimeout(r, 150));
  const exited = once(server.child, 'exit') as Promise<[number | null, string | null]>;
  server.child.kill('SIGTERM');
  const [code] = await exited;
  assert.equal(code, 0);
  data.destroy();
  resume.close();
  rename.close();
  // Got: one multipart upload left under each name, for the sweep to find a day later.
  assert.deepEqual(await listMultipartUploads(env, prefix), []);
  for (const name of ['resumed.bin', 'renamed.bin']) {
    const head = await env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: `${prefix}/${name}` }));
    assert.equal(head.ContentLength, size, name);
  }
  await assert.rejects(env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: `${prefix}/moved.bin` })), { name: 'NotFound' });
});

test('SIGTERM while a resume copies its kept prefix, with grace to spare: the copy ends, the transfer runs on and completes (226, then 421)', { skip: s3 ? false : 'no MinIO', timeout: 90_000 }, async () => {
  const env = s3!;
  const prefix = `shutdown-grace-${Date.now()}`;
  const size = 160 * MiB;
  await env.client.send(new PutObjectCommand({ Bucket: env.bucket, Key: `${prefix}/resumed.bin`, Body: Buffer.alloc(size, 7) }));
  const server = await startServerProcess(
    childEnv({ ...s3Settings(env, prefix), FTP_PORT: '0', FTP_USER: 'alice', FTP_PASSWORD: 'shutdown-test-pw', FTP_SHUTDOWN_GRACE: '30' }),
  );
  const resume = await RawFtp.login(server.port, 'alice', 'shutdown-test-pw');
  await resume.expect('TYPE I', 200);
  const data = await resume.passive();
  await resume.expect(`REST ${size - MiB}`, 350);
  resume.socket.write('STOR resumed.bin\r\n');
  await new Promise((r) => setTimeout(r, 150));
  const exited = once(server.child, 'exit') as Promise<[number | null, string | null]>;
  server.child.kill('SIGTERM');
  // Got: 150 then 426: the command finished within the grace, and the transfer it started was aborted at once.
  assert.equal((await resume.read(30_000)).code, 150);
  data.end(Buffer.alloc(MiB, 9));
  assert.equal((await resume.read(30_000)).code, 226);
  assert.equal((await resume.read(30_000)).code, 421);
  const [code] = await exited;
  assert.equal(code, 0);
  resume.close();
  const head = await env.client.send(new HeadObjectCommand({ Bucket: env.bucket, Key: `${prefix}/resumed.bin` }));
  assert.equal(head.ContentLength, size);
  assert.deepEqual(await listMultipartUploads(env, prefix), []);
});

test('SIGTERM with logins waiting on slow scrypt checks exits without waiting for them (grace 0)', { timeout: 60_000 }, async () => {
  // A hash that takes seconds to check (p = 48), as an administrator's choice could; its bytes need not match anything.
  const slow = `scrypt$16384$8$48$${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}`;
  const dir = mkdtempSync(join(tmpdir(), 's3ftp-shutdown-'));
  const users = join(dir, 'users.json');
  writeFileSync(users, JSON.stringify({ users: [{ name: 'slow', password: slow, home: '' }] }));
  const server = await startServerProcess(
    childEnv({ FTP_PORT: '0', DATA_DIR: join(dir, 'data'), FTP_USERS_FILE: users, FTP_SHUTDOWN_GRACE: '0', FTP_LOGIN_DELAY_MS: '0' }),
  );
  const clients = await Promise.all(Array.from({ length: 12 }, () => RawFtp.connect(server.port)));
  for (const ftp of clients) ftp.socket.write('USER slow\r\nPASS wrong\r\n');
  await new Promise((r) => setTimeout(r, 300));
  const exited = once(server.child, 'exit') as Promise<[number | null, string | null]>;
  const started = performance.now();
  server.child.kill('SIGTERM');
  const [code] = await exited;
  const seconds = (performance.now() - started) / 1000;
  for (const ftp of clients) ftp.close();
  assert.equal(code, 0);
  // Got: 9–26 s, the checks run four at a time on the thread pool and the shutdown waited for each.
  assert.ok(seconds < 6, `exit took ${seconds.toFixed(1)} s`);
  rmSync(dir, { recursive: true, force: true });
});
