import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { hashPassword, parsePasswordHash, parseUsersFile, verifyPassword } from '../src/auth/users.js';
import { ConfigError, loadConfig } from '../src/config/index.js';
import { configSource, loadConfigWithFile } from '../src/config/file.js';
import { DEFAULT_CIPHERS } from '../src/server/tls.js';
import { tempDir } from './helpers/server.js';
import { testCertificate } from './helpers/tls.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../src/main.js', import.meta.url));

test('defaults: loopback, port 2121, local ./data, no user', () => {
  const config = loadConfig({});
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.port, 2121);
  assert.equal(config.storage.kind, 'local');
  assert.deepEqual(config.users, []);
});

test('S3_BUCKET selects the S3 driver with its options', () => {
  const config = loadConfig({ S3_BUCKET: 'my-bucket', S3_PREFIX: '/drops/', S3_ENDPOINT: 'http://127.0.0.1:9000', S3_REGION: 'eu-west-1' });
  assert.deepEqual(
    { ...config.storage, partSize: undefined, queueSize: undefined, requestTimeoutMs: undefined, renameConcurrency: undefined, multipartCopyThreshold: undefined },
    { kind: 's3', bucket: 'my-bucket', prefix: 'drops', extraBuckets: [], endpoint: 'http://127.0.0.1:9000', region: 'eu-west-1', forcePathStyle: true, partSize: undefined, queueSize: undefined, requestTimeoutMs: undefined, renameConcurrency: undefined, multipartCopyThreshold: undefined },
  );
  const s3 = loadConfig({ S3_BUCKET: 'b-1', S3_RENAME_CONCURRENCY: '4', S3_MULTIPART_COPY_THRESHOLD_MB: '64' }).storage;
  assert.equal(s3.kind === 's3' && s3.renameConcurrency, 4);
  assert.equal(s3.kind === 's3' && s3.multipartCopyThreshold, 64 * 1024 * 1024);
});

test('every invalid setting fails with one message naming the variable', () => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ FTP_PORT: 'abc' }, 'FTP_PORT'],
    [{ FTP_PORT: '70000' }, 'FTP_PORT'],
    [{ FTP_HOST: 'example.com' }, 'FTP_HOST'],
    [{ FTP_PASV_PORTS: '3000' }, 'FTP_PASV_PORTS'],
    [{ FTP_PASV_PORTS: '40000-30000' }, 'FTP_PASV_PORTS'],
    [{ FTP_PASV_ADDRESS: '::1' }, 'FTP_PASV_ADDRESS'],
    [{ FTP_USER: 'bob' }, 'FTP_PASSWORD'],
    [{ FTP_PASSWORD: 'pw' }, 'FTP_USER'],
    [{ FTP_USERS_FILE: '/nonexistent/users.json' }, 'FTP_USERS_FILE'],
    [{ S3_BUCKET: 'Bad_Bucket' }, 'S3_BUCKET'],
    [{ S3_BUCKET: 'ok-bucket', S3_ENDPOINT: 'ftp://x' }, 'S3_ENDPOINT'],
    [{ S3_BUCKET: 'ok-bucket', S3_FORCE_PATH_STYLE: 'maybe' }, 'S3_FORCE_PATH_STYLE'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
  ];
  for (const [env, variable] of cases) {
    assert.throws(() => loadConfig(env), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${variable}:`), JSON.stringify(env));
  }
});

test('FTPS_CIPHERS and FTPS_MIN_VERSION: forward-secret AEAD and TLS 1.2 by default, checked when set', () => {
  const { cert, key } = testCertificate();
  const files = { FTPS_CERT_FILE: cert, FTPS_KEY_FILE: key };
  const defaults = loadConfig(files).ftps;
  assert.equal(defaults?.ciphers, DEFAULT_CIPHERS);
  assert.equal(defaults?.minVersion, 'TLSv1.2');
  const set = loadConfig({ ...files, FTPS_CIPHERS: 'TLS_AES_256_GCM_SHA384:ECDHE-ECDSA-AES256-GCM-SHA384', FTPS_MIN_VERSION: 'tlsv1.3' }).ftps;
  assert.equal(set?.ciphers, 'TLS_AES_256_GCM_SHA384:ECDHE-ECDSA-AES256-GCM-SHA384');
  assert.equal(set?.minVersion, 'TLSv1.3');
  const bad: Array<[Record<string, string>, string]> = [
    [{ FTPS_MIN_VERSION: 'TLSv1.1' }, 'FTPS_MIN_VERSION'],
    [{ FTPS_MIN_VERSION: 'TLSv1' }, 'FTPS_MIN_VERSION'],
    [{ FTPS_MIN_VERSION: '1.2' }, 'FTPS_MIN_VERSION'],
    [{ FTPS_CIPHERS: 'NO-SUCH-SUITE' }, 'FTPS_CIPHERS'],
    [{ FTPS_CIPHERS: 'TLS_NO_SUCH_SUITE' }, 'FTPS_CIPHERS'],
  ];
  for (const [env, variable] of bad) {
    assert.throws(() => loadConfig({ ...files, ...env }), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${variable}:`), JSON.stringify(env));
  }
});

test('the users file takes scrypt hashes and homes', async () => {
  const hash = await hashPassword('s3cret');
  const file = join(tempDir(), 'users.json');
  writeFileSync(file, JSON.stringify({ users: [{ name: 'alice', password: hash, home: '/alice' }, { name: 'bob', password: hash }] }));
  const config = loadConfig({ FTP_USERS_FILE: file, FTP_USER: 'carol', FTP_PASSWORD: 'pw' });
  assert.deepEqual(config.users.map((u) => [u.name, u.home]), [['alice', 'alice'], ['bob', ''], ['carol', '']]);
  assert.equal(await verifyPassword(config.users[0]!.password, 's3cret'), true);
  assert.equal(await verifyPassword(config.users[0]!.password, 'wrong'), false);
  assert.equal(await verifyPassword(config.users[2]!.password, 'pw'), true);
  for (const guess of ['', 'p', 'pw ', 'PW', 'pwpw']) assert.equal(await verifyPassword(config.users[2]!.password, guess), false, guess);
  assert.throws(() => parseUsersFile('{"users":[{"name":"x","password":"plain"}]}'), /users\[0\]\.password/);
  assert.throws(() => parseUsersFile('{"users":[{"name":"x y","password":"' + hash + '"}]}'), /users\[0\]\.name/);
  assert.throws(() => parsePasswordHash('scrypt$3$8$1$AA$AA'), /scrypt parameters/);
  // Two names that differ only in case would share one maxSessions count: refused.
  assert.throws(() => parseUsersFile(JSON.stringify({ users: [{ name: 'alice', password: hash }, { name: 'Alice', password: hash }] })), /users\[1\]\.name "Alice" appears twice/);
  writeFileSync(file, JSON.stringify({ users: [{ name: 'Carol', password: hash }] }));
  assert.throws(() => loadConfig({ FTP_USERS_FILE: file, FTP_USER: 'carol', FTP_PASSWORD: 'pw' }), /"carol" is also defined/);
  // One directory named twice (`/pub/` and `/pub`): the first spelling silently won.
  assert.throws(() => parseUsersFile(JSON.stringify({ users: [{ name: 'x', password: hash, permissions: { '/': 'read-only', '/pub/': 'full', '/pub': 'read-only' } }] })), /"\/pub" names \/pub again/);
});

test('a users file or FTP_USERS_JSON that defines no users is refused, even beside FTP_USER', () => {
  const file = join(tempDir(), 'users.json');
  writeFileSync(file, '{ "users": [] }');
  const cases: Array<[Record<string, string>, string]> = [
    [{ FTP_USERS_JSON: '{"users":[]}' }, 'FTP_USERS_JSON: defines no users: the "users" array is empty'],
    [{ FTP_USERS_JSON: '{"users":[]}', FTP_USER: 'carol', FTP_PASSWORD: 'pw' }, 'FTP_USERS_JSON: defines no users: the "users" array is empty'],
    [{ FTP_USERS_FILE: file }, `FTP_USERS_FILE: ${file}: defines no users: the "users" array is empty`],
    [{ FTP_USERS_FILE: file, FTP_USER: 'carol', FTP_PASSWORD: 'pw' }, `FTP_USERS_FILE: ${file}: defines no users: the "users" array is empty`],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => loadConfig(env), (err: unknown) => err instanceof ConfigError && err.message === message, JSON.stringify(env));
  }
});

test('serve stops on an empty users list instead of making up a user', async () => {
  await assert.rejects(
    run(process.execPath, [main], { env: { ...process.env, FTP_USERS_JSON: '{"users":[]}', FTP_PORT: '0' }, timeout: 10_000 }),
    (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 2);
      assert.equal(err.stderr.trim(), 's3ftp: invalid configuration: FTP_USERS_JSON: defines no users: the "users" array is empty');
      assert.doesNotMatch(err.stderr, /password/i);
      return true;
    },
  );
});

test('the server refuses to start on bad configuration, naming the variable', async () => {
  await assert.rejects(run(process.execPath, [main], { env: { ...process.env, FTP_PORT: 'x' } }), (err: { code: number; stderr: string }) => {
    assert.equal(err.code, 2);
    assert.equal(err.stderr.trim(), 's3ftp: invalid configuration: FTP_PORT: "x" is not a whole number');
    return true;
  });
});

test('hash-password prints a hash the users file accepts', async () => {
  const { stdout } = await run(process.execPath, [main, 'hash-password', 'pw'], {});
  const secret = parsePasswordHash(stdout.trim());
  assert.equal(await verifyPassword(secret, 'pw'), true);
});

test('a users file with a key it does not know is refused, naming the key and the user', async () => {
  const hash = await hashPassword('s3cret');
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ name: 'ro', password: hash, permission: 'read-only' }, /users\[0\] \(user "ro"\): unknown key "permission" \(did you mean "permissions"\?\)$/],
    [{ name: 'jailed', password: hash, homedir: '/jail' }, /users\[0\] \(user "jailed"\): unknown key "homedir" \(did you mean "home"\?\)$/],
    [{ name: 'x', password: hash, require_tls: true }, /unknown key "require_tls" \(did you mean "requireTls"\?\)/],
    [{ name: 'x', password: hash, quota: 5 }, /unknown key "quota" \(known keys: name, password, home, mounts, permissions,/],
    [{ username: 'x', password: hash }, /users\[0\]: unknown key "username"/],
  ];
  for (const [entry, message] of cases) {
    assert.throws(() => parseUsersFile(JSON.stringify({ users: [entry] })), message, JSON.stringify(entry));
  }
  assert.throws(() => parseUsersFile(JSON.stringify({ users: [{ name: 'x', password: hash }], user: [] })), /the users file: unknown key "user"/);
  assert.throws(() => parseUsersFile(JSON.stringify({ users: ['alice'] })), /users\[0\] must be an object/);
  // Through the configuration, as check-config and serve read it.
  const file = join(tempDir(), 'users.json');
  writeFileSync(file, JSON.stringify({ users: [{ name: 'ro', password: hash, permission: 'read-only' }] }));
  assert.throws(() => loadConfig({ FTP_USERS_FILE: file }), (err: unknown) => err instanceof ConfigError && /unknown key "permission"/.test(err.message));
  // Every documented key is still accepted.
  const [user] = parseUsersFile(JSON.stringify({
    users: [{ name: 'ok', password: hash, home: '/h', permissions: 'read-only', requireTls: true, requireProtP: false, keepPartialUploads: true }],
  }));
  assert.equal(user!.home, 'h');
});

test('check-config refuses a users file with a misspelt key (exit code, the key on stderr)', async () => {
  const hash = await hashPassword('s3cret');
  const dir = tempDir();
  const users = join(dir, 'users.json');
  writeFileSync(users, JSON.stringify({ users: [{ name: 'ro', password: hash, permission: 'read-only' }] }));
  const result = await run(process.execPath, [main, 'check-config'], {
    env: { PATH: process.env.PATH, FTP_USERS_FILE: users, DATA_DIR: dir },
    timeout: 30_000,
  }).then(() => undefined, (err: { code: number; stderr: string }) => err);
  assert.ok(result, 'check-config must fail');
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /unknown key "permission"/);
});

test('a config file setting nothing reads: reported in unused, and a ConfigError naming it when strict', () => {
  const dir = tempDir();
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ FTP_PORTT: 2300, DATA_DIR: dir }));
  const source = configSource({}, file);
  assert.deepEqual(loadConfigWithFile({}, source).unused, ['FTP_PORTT']);
  assert.throws(
    () => loadConfigWithFile({}, source, { strict: true }),
    (err: unknown) => err instanceof ConfigError && err.message === `"FTP_PORTT" in ${file} is not used by this configuration (misspelt, or no effect with these settings)`,
  );
  writeFileSync(file, JSON.stringify({ FTP_PORT: 2300, DATA_DIR: dir }));
  assert.equal(loadConfigWithFile({}, source, { strict: true }).config.port, 2300);
});
