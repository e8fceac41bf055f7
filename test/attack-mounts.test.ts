import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CreateBucketCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { hashPassword, parsePasswordHash, parseUsersFile, type User } from '../src/auth/users.js';
import { append, RawFtp, readAll, store } from './helpers/ftp.js';
import { getS3, s3StorageConfig } from './helpers/minio.js';
import { startTestServer, tempDir, type Driver, type TestServer } from './helpers/server.js';

/**
 * Attacks on the per-user mount table and per-user limits (issue 15.2/15.4).
 * Every test here failed against main at 8712958; each asserts what should happen.
 */

const PW = 'pw';
const HASH = 'scrypt$16384$8$1$c2FsdA==$aGFzaA==';
const plain = { kind: 'plain', value: PW } as const;
const parse = (entry: Record<string, unknown>) => parseUsersFile(JSON.stringify({ users: [{ name: 'p', password: HASH, ...entry }] }))[0]!;
const local = (dataDir: string): Driver => ({ name: 'local', storageConfig: () => ({ kind: 'local', dataDir }), danglingUploads: async () => [] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A listing's names (150 then 226), or the code of a refusal. */
async function names(ftp: RawFtp, verb: string, path: string): Promise<string[] | number> {
  const data = await ftp.passive();
  const first = await ftp.send(`${verb} ${path}`);
  if (first.code !== 150) {
    data.destroy();
    return first.code;
  }
  const text = (await readAll(data)).toString();
  const done = await ftp.read();
  if (done.code !== 226) return done.code;
  return text.split('\r\n').filter(Boolean).map((l) => (verb === 'LIST' ? l.split(' ').at(-1)! : verb === 'MLSD' ? l.slice(l.indexOf(' ') + 1) : l)).sort();
}

describe('attack: maxSessions accounting', () => {
  let server: TestServer;

  before(async () => {
    // A real scrypt hash, as in a users file: the password check takes tens of ms.
    const secret = parsePasswordHash(await hashPassword(PW));
    server = await startTestServer(local(tempDir()), {
      users: [
        { name: 'reset', password: secret, home: 'reset', maxSessions: 1 },
      ],
    });
  });

  after(async () => server?.close());

  /** Sends USER and PASS in one write, then drops the connection while the password is being checked. */
  async function dropDuringPass(name: string, how: 'reset' | 'end'): Promise<void> {
    const socket = connect({ port: server.port, host: '127.0.0.1' });
    socket.on('error', () => {});
    await once(socket, 'connect');
    await once(socket, 'data'); // 220
    socket.write(`USER ${name}\r\nPASS ${PW}\r\n`);
    await sleep(10);
    if (how === 'reset') socket.resetAndDestroy();
    else socket.end();
    await sleep(500);
  }

  test('a client that resets its connection during PASS does not keep a session counted: the next login is 230, not 530', async () => {
    await dropDuringPass('reset', 'reset');
    // Got: 530 Too many sessions for this user (at most 1): the dead session was counted after it closed, forever.
    const ftp = await RawFtp.login(server.port, 'reset', PW);
    ftp.close();
  });
});

describe('attack: fixed directories held by the home', () => {
  let server: TestServer;

  before(async () => {
    const dataDir = tempDir();
    mkdirSync(join(dataDir, 'common'), { recursive: true });
    writeFileSync(join(dataDir, 'common', 'shared.txt'), 'shared');
    mkdirSync(join(dataDir, 'home', 'bob'), { recursive: true });
    // The home holds a file where the mount table has a fixed directory (above /pub/shared).
    writeFileSync(join(dataDir, 'home', 'bob', 'pub'), 'a file named pub');
    const shared = [{ dir: '/pub/shared', target: { path: 'common' } }];
    server = await startTestServer(local(dataDir), {
      users: [
        { name: 'bob', password: plain, home: 'home/bob', mounts: shared },
        { name: 'carol', password: plain, home: 'home/carol', mounts: shared },
      ],
    });
  });

  after(async () => server?.close());

  test('a fixed directory over a file of the home lists its mounts (MLSD, LIST, NLST), not a bogus entry or 550', async () => {
    const ftp = await RawFtp.login(server.port, 'bob', PW);
    try {
      await ftp.expect('CWD /pub', 250);
      await ftp.expect('CWD /', 250);
      // Got: 550 Not a directory (the home's file answered, though the table says directory).
      assert.deepEqual(await names(ftp, 'MLSD', '/pub'), ['shared']);
      // Got: one line "drwxr-xr-x ... /pub" (the stat of the argument, as for a file).
      assert.deepEqual(await names(ftp, 'LIST', '/pub'), ['shared']);
      assert.deepEqual(await names(ftp, 'NLST', '/pub'), ['shared']);
    } finally {
      ftp.close();
    }
  });

  test('a fixed directory the home does not hold yet takes files and directories, as MKD says it exists', async () => {
    const ftp = await RawFtp.login(server.port, 'carol', PW);
    try {
      assert.deepEqual(await names(ftp, 'NLST', '/pub'), ['shared']);
      assert.equal((await ftp.send('MKD /pub')).code, 550); // "File exists."
      // Got: 550 No such file or directory for both: /pub is shown, CWD-able, "exists", yet unusable.
      assert.equal(await store(ftp, '/pub/own.txt', 'own'), 226);
      assert.equal((await ftp.send('MKD /pub/sub')).code, 257);
    } finally {
      ftp.close();
    }
  });
});

describe('attack: maxFileSize edges', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer(local(tempDir()), { users: [{ name: 'small', password: plain, home: 'small', maxFileSize: 10 }] });
  });

  after(async () => server?.close());

  test('TYPE A counts the stored bytes: 10 lines of CRLF store 10 bytes and are within maxFileSize 10', async () => {
    const ftp = await RawFtp.login(server.port, 'small', PW);
    try {
      await ftp.expect('TYPE A', 200);
      // Got: 552: the limit counts the 20 bytes on the wire, before CRLF becomes LF.
      assert.equal(await store(ftp, 'lines.txt', Buffer.from('\r\n'.repeat(10))), 226);
      await ftp.expect('TYPE I', 200);
      assert.equal(await store(ftp, 'lines.txt', Buffer.alloc(11)), 552);
    } finally {
      ftp.close();
    }
  });

  test('resuming a file already at maxFileSize with nothing more (REST size + STOR, APPE of 0 bytes) is 226, not 552', async () => {
    const ftp = await RawFtp.login(server.port, 'small', PW);
    try {
      assert.equal(await store(ftp, 'full.bin', Buffer.alloc(10, 1)), 226);
      // Got: 552 for both: `kept >= maxFileSize` refuses a result of exactly maxFileSize bytes.
      assert.equal(await store(ftp, 'full.bin', Buffer.alloc(0), 10), 226);
      assert.equal(await append(ftp, 'full.bin', Buffer.alloc(0)), 226);
    } finally {
      ftp.close();
    }
  });
});

describe('attack: users-file mounts that parse but cannot work', () => {
  test('mounts {} , a duplicate mount directory, and a mistyped s3:// scheme are refused when the file is read', () => {
    // Got: mounts [] (no home, no mounts: every login is then 550 "Permission denied." to PASS).
    assert.throws(() => parse({ mounts: {} }), /mounts/);
    // Got: two mounts at /a; the second is silently never used.
    assert.throws(() => parse({ mounts: { '/a': '/x', 'a/': '/y' } }), /mounts/);
    // Got: the server's own storage at "S3:/exports/acme" and "s3:/exports/acme", not the bucket exports.
    assert.throws(() => parse({ mounts: { '/o': 'S3://exports/acme' } }), /mounts/);
    assert.throws(() => parse({ mounts: { '/o': 's3:/exports/acme' } }), /mounts/);
  });

  test('a permission rule for a directory no mount holds does not make PASS fail with 550', async () => {
    const server = await startTestServer(local(tempDir()), {
      users: [{ ...parse({ mounts: { '/outgoing': '/exports/acme' }, permissions: { '/': ['list'], '/archive': 'read-only' } }), name: 'rule', password: plain }],
    });
    try {
      // Got: 550 Permission denied.: login makes /archive (a rule's directory), which no mount holds.
      const ftp = await RawFtp.login(server.port, 'rule', PW);
      ftp.close();
    } finally {
      await server.close();
    }
  });
});

describe('attack: the upload sweep on S3 reaches past S3_PREFIX', () => {
  test('with S3_PREFIX set (and an extra bucket), multipart uploads outside the prefix and in the extra bucket are not aborted', async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const extra = `drops-${randomBytes(4).toString('hex')}`;
    await s3.client.send(new CreateBucketCommand({ Bucket: extra }));
    // Another deployment's upload in the same bucket under another prefix, and another application's in the extra bucket.
    const elsewhere = `other-deployment-${randomBytes(4).toString('hex')}/big.bin`;
    await s3.client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: elsewhere }));
    await s3.client.send(new CreateMultipartUploadCommand({ Bucket: extra, Key: 'other-app/big.bin' }));
    const open = async (bucket: string, key: string) =>
      ((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }))).Uploads ?? []).length;
    await sleep(1500);
    const config = { ...s3StorageConfig(s3, 'attack-sweep'), extraBuckets: [extra] };
    // No user names s3://<S3_BUCKET>/ or the extra bucket: the server's storage is its prefix alone.
    const server = await startTestServer({ name: 's3', storageConfig: () => config, danglingUploads: async () => [] }, { sweepAgeMs: 1000 });
    try {
      await sleep(1500); // the sweep at start
      // Got: 0 and 0: the whole-bucket drivers (S3_BUCKET with prefix '', each extra bucket) are swept too.
      assert.equal(await open(s3.bucket, elsewhere), 1, 'upload outside S3_PREFIX');
      assert.equal(await open(extra, 'other-app/big.bin'), 1, 'upload in the extra bucket');
    } finally {
      await server.close();
    }
  });
});
