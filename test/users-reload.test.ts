import assert from 'node:assert/strict';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { hashPassword } from '../src/auth/users.js';
import { loadConfig } from '../src/config/index.js';
import { createServer } from '../src/index.js';
import { RawFtp } from './helpers/ftp.js';
import { childEnv, s3Settings, startServerProcess } from './helpers/process.js';
import { drivers, tempDir, type Driver } from './helpers/server.js';

const all = await drivers();
const PASSWORDS = ['alice-1', 'alice-2', 'bob-1', 'dave-1'];
const [aliceOld, aliceNew, bobPw, davePw] = await Promise.all(PASSWORDS.map((p) => hashPassword(p)));
/** What no log line may hold: the passwords, and the salts and hashes of their scrypt strings. */
const secrets = [...PASSWORDS, ...[aliceOld, aliceNew, bobPw, davePw].flatMap((h) => h!.split('$').slice(4))];

/** The settings that put a server on this driver's storage, at a fresh place. */
function storageSettings(driver: Driver, label: string): Record<string, string> {
  if (driver.name === 'local') return { DATA_DIR: tempDir() };
  return s3Settings(driver.s3!, `reload-${process.pid}-${label}-${Date.now()}`);
}

/** Writes the users file the way an operator should: a new file renamed over the old one. */
function writeUsers(file: string, content: unknown): void {
  const next = `${file}.new`;
  writeFileSync(next, typeof content === 'string' ? content : JSON.stringify(content));
  renameSync(next, file);
}

/** USER then PASS on a fresh connection; the reply code to PASS. */
async function loginCode(port: number, user: string, password: string): Promise<number> {
  const ftp = await RawFtp.connect(port);
  try {
    await ftp.expect(`USER ${user}`, 331);
    return (await ftp.send(`PASS ${password}`)).code;
  } finally {
    ftp.close();
  }
}

/** Resolves with the first log entry that matches, polling `logs` (which the server appends to). */
async function waitForLog(logs: Array<Record<string, unknown>>, match: (entry: Record<string, unknown>) => boolean, from = 0, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = logs.slice(from).find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no matching log line; got ${JSON.stringify(logs.slice(from))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const FAST_FAILURES = { FTP_LOGIN_DELAY_MS: '0', FTP_MAX_LOGIN_FAILURES: '1000' };

for (const driver of all) {
  describe(`users file re-read (${driver.name})`, { skip: driver.skip }, () => {
    test('SIGHUP: a new user gets 230, a removed one 530, a changed password and permissions apply to new logins only; FTP_USER stays; the process lives on', { timeout: 120_000 }, async () => {
      const dir = tempDir();
      const file = join(dir, 'users.json');
      writeUsers(file, { users: [{ name: 'alice', password: aliceOld }, { name: 'bob', password: bobPw }] });
      const server = await startServerProcess(
        childEnv({
          ...storageSettings(driver, 'hup'),
          ...FAST_FAILURES,
          FTP_PORT: '0',
          FTP_USERS_FILE: file,
          // Only SIGHUP re-reads here, so nothing changes behind the test's back.
          FTP_USERS_RELOAD_SECONDS: '0',
          FTP_USER: 'carol',
          FTP_PASSWORD: 'carol-1',
        }),
      );
      try {
        // Sessions logged in before the change: alice with full rights, bob who is about to be removed.
        const aliceBefore = await RawFtp.login(server.port, 'alice', 'alice-1');
        const bobBefore = await RawFtp.login(server.port, 'bob', 'bob-1');
        assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 530);

        writeUsers(file, {
          users: [
            { name: 'alice', password: aliceNew, permissions: 'read-only' },
            { name: 'dave', password: davePw },
          ],
        });
        const from = server.logs.length;
        server.child.kill('SIGHUP');
        const reloaded = await waitForLog(server.logs, (l) => l.event === 'users-reloaded', from);
        assert.equal(reloaded.level, 30);
        assert.equal(reloaded.trigger, 'SIGHUP');
        assert.deepEqual(
          { users: reloaded.users, added: reloaded.added, removed: reloaded.removed, changed: reloaded.changed, names: reloaded.names },
          { users: 3, added: 1, removed: 1, changed: 1, names: { added: ['dave'], removed: ['bob'], changed: ['alice'] } },
        );
        assert.ok(!secrets.some((x) => JSON.stringify(reloaded).includes(x)), 'a secret in the log');
        assert.equal(server.child.exitCode, null, 'SIGHUP must not end the process');

        assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 230);
        assert.equal(await loginCode(server.port, 'bob', 'bob-1'), 530);
        assert.equal(await loginCode(server.port, 'alice', 'alice-1'), 530);
        assert.equal(await loginCode(server.port, 'carol', 'carol-1'), 230);
        // A new alice session has the new, read-only rights.
        const aliceAfter = await RawFtp.login(server.port, 'alice', 'alice-2');
        await aliceAfter.expect('MKD after', 550);
        aliceAfter.close();
        // The sessions from before keep the user they logged in as, rights included.
        await aliceBefore.expect('MKD before', 257);
        await bobBefore.expect('PWD', 257);
        await bobBefore.expect('MKD bob-still-in', 257);
        aliceBefore.close();
        bobBefore.close();

        // A change to permissions alone is a change too. Got: "unchanged" (the rules' sets
        // serialised as {}), and alice kept read-only rights on every new login.
        writeUsers(file, {
          users: [
            { name: 'alice', password: aliceNew, permissions: 'full' },
            { name: 'dave', password: davePw },
          ],
        });
        const again = server.logs.length;
        server.child.kill('SIGHUP');
        const promoted = await waitForLog(server.logs, (l) => l.event === 'users-reloaded' || l.event === 'users-reload', again);
        assert.deepEqual(promoted.names, { added: [], removed: [], changed: ['alice'] });
        const alicePromoted = await RawFtp.login(server.port, 'alice', 'alice-2');
        await alicePromoted.expect('MKD promoted', 257);
        alicePromoted.close();
      } finally {
        await server.stop();
      }
    });

    test('SIGHUP: a bad version is refused with one error line naming the problem, and the users before it stay', { timeout: 120_000 }, async () => {
      const dir = tempDir();
      const file = join(dir, 'users.json');
      const good = { users: [{ name: 'dave', password: davePw }] };
      writeUsers(file, good);
      const server = await startServerProcess(
        childEnv({ ...storageSettings(driver, 'bad'), ...FAST_FAILURES, FTP_PORT: '0', FTP_USERS_FILE: file, FTP_USERS_RELOAD_SECONDS: '0', FTP_USER: 'carol', FTP_PASSWORD: 'carol-1' }),
      );
      try {
        const bad: Array<[string, unknown, RegExp]> = [
          ['invalid JSON', `{"users": [{"name": "eve", "password": "${davePw}"`, /^not valid JSON: /],
          ['an unknown key', { users: [{ name: 'dave', password: davePw, permission: 'read-only' }] }, /unknown key "permission" \(did you mean "permissions"\?\)/],
          ['no users', '{"users": []}', /defines no users/],
          ['a password in clear', { users: [{ name: 'dave', password: 'dave-1' }] }, /users\[0\]\.password: password hash must look like/],
          ['FTP_USER also in the file', { users: [{ name: 'carol', password: davePw }] }, /^FTP_USER: "carol" is also defined in the users file$/],
          [
            'a bucket the server does not serve',
            { users: [{ name: 'dave', password: davePw, mounts: { '/x': 's3://nowhere-bucket/x' } }] },
            /^user "dave": (bucket "nowhere-bucket" is not served|s3:\/\/nowhere-bucket needs the S3 driver)/,
          ],
          ['an unreadable file', () => rmSync(file), /^cannot read .*users\.json: ENOENT/],
        ];
        for (const [what, content, reason] of bad) {
          if (typeof content === 'function') (content as () => void)();
          else writeUsers(file, content);
          const from = server.logs.length;
          server.child.kill('SIGHUP');
          const refused = await waitForLog(server.logs, (l) => l.event === 'users-reload-refused', from);
          assert.equal(refused.level, 50, what);
          assert.match(String(refused.reason), reason, what);
          assert.ok(!secrets.some((x) => JSON.stringify(refused).includes(x)), `${what}: a secret in the log`);
          // One line per bad version, and no swap.
          await new Promise((r) => setTimeout(r, 200));
          const since = server.logs.slice(from);
          assert.equal(since.filter((l) => l.level === 50).length, 1, what);
          assert.equal(since.filter((l) => l.event === 'users-reloaded').length, 0, what);
          assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 230, what);
          assert.equal(await loginCode(server.port, 'carol', 'carol-1'), 230, what);
          assert.equal(await loginCode(server.port, 'eve', 'dave-1'), 530, what);
        }
        // A good version after the bad ones is taken.
        writeUsers(file, { users: [{ name: 'eve', password: davePw }] });
        const from = server.logs.length;
        server.child.kill('SIGHUP');
        await waitForLog(server.logs, (l) => l.event === 'users-reloaded', from);
        assert.equal(await loginCode(server.port, 'eve', 'dave-1'), 230);
        assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 530);
      } finally {
        await server.stop();
      }
    });

    test('every FTP_USERS_RELOAD_SECONDS: a change is taken, unchanged content and a bad version are logged once, not per period; reloadUsers() from the library', { timeout: 120_000 }, async () => {
      const dir = tempDir();
      const file = join(dir, 'users.json');
      writeUsers(file, { users: [{ name: 'dave', password: davePw }] });
      const config = loadConfig({ ...storageSettings(driver, 'timer'), ...FAST_FAILURES, FTP_PORT: '0', FTP_USERS_FILE: file, FTP_USERS_RELOAD_SECONDS: '1' });
      assert.deepEqual({ path: config.usersFile?.path, reloadMs: config.usersFile?.reloadMs }, { path: file, reloadMs: 1000 });
      const logs: Array<Record<string, unknown>> = [];
      const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
      const server = await createServer(config, { logger });
      const port = server.address.port;
      try {
        // Up to a period and a half for the timer to see the change.
        writeUsers(file, { users: [{ name: 'dave', password: davePw }, { name: 'eve', password: davePw }] });
        const reloaded = await waitForLog(logs, (l) => l.event === 'users-reloaded');
        assert.equal(reloaded.trigger, 'timer');
        assert.equal(reloaded.added, 1);
        assert.equal(await loginCode(port, 'eve', 'dave-1'), 230);

        // The same users again (rewritten, other spacing): no swap, no line.
        writeUsers(file, JSON.stringify({ users: [{ name: 'dave', password: davePw }, { name: 'eve', password: davePw }] }, null, 2));
        let from = logs.length;
        await new Promise((r) => setTimeout(r, 2500));
        assert.deepEqual(logs.slice(from).filter((l) => String(l.event).startsWith('users-reload')), []);

        // A bad version: one error line over several periods, and the users stay.
        writeUsers(file, '{"users": [}');
        from = logs.length;
        await waitForLog(logs, (l) => l.event === 'users-reload-refused', from);
        await new Promise((r) => setTimeout(r, 2500));
        assert.equal(logs.slice(from).filter((l) => l.event === 'users-reload-refused').length, 1);
        assert.equal(await loginCode(port, 'eve', 'dave-1'), 230);

        // Asked explicitly, the same bad version is reported again: the asker gets an answer.
        const asked = await server.reloadUsers();
        assert.equal(asked.outcome, 'refused');
        assert.match((asked as { reason: string }).reason, /^not valid JSON/);

        from = logs.length;
        writeUsers(file, { users: [{ name: 'dave', password: davePw }] });
        const first = await server.reloadUsers();
        if (first.outcome === 'unchanged') {
          // The 1 s timer got there first: it took the same version.
          const line = logs.slice(from).find((l) => l.event === 'users-reloaded');
          assert.deepEqual(line?.names, { added: [], removed: ['eve'], changed: [] });
        } else {
          assert.deepEqual(first, { outcome: 'reloaded', users: 1, added: [], removed: ['eve'], changed: [] });
        }
        assert.deepEqual(await server.reloadUsers(), { outcome: 'unchanged' });
        assert.equal(await loginCode(port, 'eve', 'dave-1'), 530);
        assert.equal(await loginCode(port, 'dave', 'dave-1'), 230);
      } finally {
        await server.close(0);
      }
    });
  });
}

test('without a users file, SIGHUP re-reads nothing, says so, and the server goes on', { timeout: 60_000 }, async () => {
  const users = JSON.stringify({ users: [{ name: 'dave', password: davePw }] });
  const server = await startServerProcess(childEnv({ DATA_DIR: tempDir(), FTP_PORT: '0', FTP_USERS_JSON: users }));
  try {
    server.child.kill('SIGHUP');
    const entry = await waitForLog(server.logs, (l) => l.event === 'users-reload');
    assert.equal(entry.outcome, 'no-file');
    assert.equal(server.child.exitCode, null);
    assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 230);
  } finally {
    await server.stop();
  }
});

/**
 * On AWS the users file is a Secrets Manager secret: ECS hands its value over
 * as FTP_USERS_JSON at start, and FTP_USERS_SECRET_ID names it for re-reads.
 * Secrets Manager itself cannot run here; this endpoint answers the one call
 * the server makes (GetSecretValue, AWS JSON 1.1) and checks it is signed.
 */
describe('users secret re-read (FTP_USERS_SECRET_ID)', () => {
  test('SIGHUP and the timer read the secret\'s new version; an endpoint that fails keeps the users before', { timeout: 120_000 }, async () => {
    let value = JSON.stringify({ users: [{ name: 'dave', password: davePw }] });
    let failing = false;
    const calls: Array<{ target?: string; auth?: string; secretId?: string }> = [];
    const endpoint = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const secretId = (JSON.parse(body || '{}') as { SecretId?: string }).SecretId;
        calls.push({ target: req.headers['x-amz-target'] as string, auth: req.headers.authorization, secretId });
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        if (failing) {
          res.statusCode = 500;
          res.end(JSON.stringify({ __type: 'InternalServiceError', message: 'down' }));
          return;
        }
        res.end(JSON.stringify({ ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:users-AbCdEf', Name: 'users', SecretString: value, VersionId: String(calls.length) }));
      });
    });
    await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
    const server = await startServerProcess(
      childEnv({
        DATA_DIR: tempDir(),
        ...FAST_FAILURES,
        FTP_PORT: '0',
        FTP_USERS_JSON: value,
        FTP_USERS_SECRET_ID: 'users',
        FTP_USERS_RELOAD_SECONDS: '0',
        AWS_ENDPOINT_URL_SECRETS_MANAGER: `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}`,
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: 'test-key',
        AWS_SECRET_ACCESS_KEY: 'test-secret',
      }),
    );
    try {
      assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 230);
      value = JSON.stringify({ users: [{ name: 'eve', password: davePw }] });
      let from = server.logs.length;
      server.child.kill('SIGHUP');
      const reloaded = await waitForLog(server.logs, (l) => l.event === 'users-reloaded', from);
      assert.deepEqual(reloaded.names, { added: ['eve'], removed: ['dave'], changed: [] });
      assert.equal(reloaded.file, 'secretsmanager:users');
      assert.equal(await loginCode(server.port, 'eve', 'dave-1'), 230);
      assert.equal(await loginCode(server.port, 'dave', 'dave-1'), 530);
      const call = calls.at(-1)!;
      assert.equal(call.target, 'secretsmanager.GetSecretValue');
      assert.equal(call.secretId, 'users');
      assert.match(call.auth ?? '', /^AWS4-HMAC-SHA256 Credential=test-key\/\d{8}\/us-east-1\/secretsmanager\/aws4_request/);
      // Down, then a bad version: each refused with an error line, and eve stays.
      failing = true;
      from = server.logs.length;
      server.child.kill('SIGHUP');
      const down = await waitForLog(server.logs, (l) => l.event === 'users-reload-refused', from, 30_000);
      assert.equal(down.level, 50);
      assert.match(String(down.reason), /^cannot read secretsmanager:users: /);
      failing = false;
      value = '{"users": [';
      from = server.logs.length;
      server.child.kill('SIGHUP');
      assert.match(String((await waitForLog(server.logs, (l) => l.event === 'users-reload-refused', from)).reason), /^not valid JSON/);
      assert.equal(await loginCode(server.port, 'eve', 'dave-1'), 230);
      assert.ok(!JSON.stringify(server.logs).includes('dave-1'));
    } finally {
      await server.stop();
      endpoint.close();
    }
  });

  test('FTP_USERS_SECRET_ID needs FTP_USERS_JSON (its value at start)', () => {
    assert.throws(() => loadConfig({ FTP_USERS_SECRET_ID: 'users' }), /FTP_USERS_SECRET_ID: needs FTP_USERS_JSON/);
    const config = loadConfig({ FTP_USERS_JSON: JSON.stringify({ users: [{ name: 'dave', password: davePw }] }), FTP_USERS_SECRET_ID: 'users' });
    assert.deepEqual({ ...config.usersFile, fixed: undefined }, { path: 'secretsmanager:users', secretId: 'users', reloadMs: 30_000, fixed: undefined });
  });
});
