import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hashPassword, parseUsersFile, verifyPassword } from '../src/auth/users.js';
import { configSource, loadConfigWithFile } from '../src/config/file.js';
import { ConfigError } from '../src/config/index.js';
import { RawFtp } from './helpers/ftp.js';
import { getS3 } from './helpers/minio.js';
import { childEnv, MAIN, s3Settings, startServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/server.js';
import { testCertificate } from './helpers/tls.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Runs the CLI to its end (bounded), whatever its exit code. */
function runCli(args: string[], env: Record<string, string> = {}, cwd = tempDir()): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: childEnv(env), cwd, timeout: 30_000 }, (err, stdout, stderr) => {
      // Only our own lines count here (on Node 20 the AWS SDK adds a NodeVersionSupportWarning).
      const own = stderr.split('\n').filter((line) => line.startsWith('s3ftp')).map((line) => `${line}\n`).join('');
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr: own });
    });
  });
}

function writeJson(value: unknown, dir = tempDir()): string {
  const file = join(dir, 'config.json');
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

describe('config file', () => {
  test('holds the same settings as the environment, which overrides it', () => {
    const file = writeJson({ FTP_PORT: 2200, FTP_HOST: '0.0.0.0', FTP_PROXY_PROTOCOL: true, S3_BUCKET: 'from-file', LOG_LEVEL: 'warn' });
    const { config, file: used, unused } = loadConfigWithFile({ FTP_PORT: '2300', LOG_LEVEL: '' }, configSource({}, file));
    assert.equal(used, file);
    assert.equal(config.port, 2300, 'the environment wins');
    assert.equal(config.host, '0.0.0.0', 'the file fills in the rest');
    assert.equal(config.proxyProtocol, true);
    assert.equal(config.storage.kind === 's3' && config.storage.bucket, 'from-file');
    assert.equal(config.logLevel, 'warn', 'an empty variable does not override');
    assert.deepEqual(unused, []);
  });

  test('--config wins over S3FTP_CONFIG; without either there is no file', () => {
    assert.deepEqual(configSource({ S3FTP_CONFIG: '/a.json' }, '/b.json'), { path: '/b.json', origin: '--config' });
    assert.deepEqual(configSource({ S3FTP_CONFIG: '/a.json' }, undefined), { path: '/a.json', origin: 'S3FTP_CONFIG' });
    assert.equal(configSource({}, undefined), undefined);
  });

  test('paths in the file are relative to the file; users can be inline; unused keys are reported', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'files'));
    const hash = await hashPassword('pw');
    const file = writeJson({ DATA_DIR: 'files', FTP_USERS_JSON: { users: [{ name: 'bob', password: hash }] }, FTP_PORTT: 21 }, dir);
    const { config, unused } = loadConfigWithFile({}, configSource({}, file));
    assert.equal(config.storage.kind === 'local' && config.storage.dataDir, join(dir, 'files'));
    assert.deepEqual(config.users.map((u) => u.name), ['bob']);
    assert.deepEqual(unused, ['FTP_PORTT']);
  });

  test('FTP_USERS_JSON takes the users file content from a variable (ECS secrets)', async () => {
    const hash = await hashPassword('pw');
    const config = loadConfigWithFile({ FTP_USERS_JSON: JSON.stringify({ users: [{ name: 'carol', password: hash, home: '/c' }] }) }, undefined).config;
    assert.deepEqual(config.users.map((u) => [u.name, u.home]), [['carol', 'c']]);
  });

  test('health and PROXY settings', () => {
    const off = loadConfigWithFile({}, undefined).config;
    assert.equal(off.health, undefined);
    assert.equal(off.proxyProtocol, false);
    const on = loadConfigWithFile({ HEALTH_PORT: '9090' }, undefined).config;
    assert.deepEqual(on.health, { host: '127.0.0.1', port: 9090 });
  });

  test('each bad configuration fails with one message naming what is wrong', async () => {
    const dir = tempDir();
    const cases: Array<[Record<string, string>, string | undefined, RegExp]> = [
      [{}, join(dir, 'missing.json'), /^--config: .*missing\.json: cannot read: /],
      [{}, writeJson('{ "FTP_PORT": ', tempDir()), /^--config: .*: not valid JSON: /],
      [{}, writeJson([1, 2], tempDir()), /^--config: .*: expected a JSON object of settings/],
      [{}, writeJson({ ftpPort: 21 }, tempDir()), /"ftpPort" is not a setting name \(use the variable names/],
      [{}, writeJson({ FTP_PORT: { value: 21 } }, tempDir()), /FTP_PORT must be a string, a number or a boolean$/],
      [{}, writeJson({ S3FTP_CONFIG: 'x' }, tempDir()), /S3FTP_CONFIG cannot be set in a config file$/],
      [{}, writeJson({ FTP_PORT: 70000 }, tempDir()), /^FTP_PORT: 70000 is outside 0-65535 \(set in .*config\.json\)$/],
      [{ FTP_USERS_JSON: '{"users": 3}' }, undefined, /^FTP_USERS_JSON: expected an object with a "users" array$/],
      [{ FTP_USERS_JSON: '{', FTP_USERS_FILE: '/x' }, undefined, /^FTP_USERS_JSON: set FTP_USERS_FILE or FTP_USERS_JSON, not both$/],
      [{ HEALTH_PORT: 'http' }, undefined, /^HEALTH_PORT: "http" is not a whole number$/],
      [{ HEALTH_PORT: '9090', HEALTH_HOST: 'localhost' }, undefined, /^HEALTH_HOST: "localhost" is not an IP address$/],
      [{ FTP_PROXY_PROTOCOL: 'v2' }, undefined, /^FTP_PROXY_PROTOCOL: "v2" is not true or false$/],
      // Got: accepted, and check-config printed "at http://AKIAEXAMPLE:SecretInUrl@127.0.0.1:9".
      [{ S3_BUCKET: 'files', S3_ENDPOINT: 'http://AKIAEXAMPLE:SecretInUrl@127.0.0.1:9' }, undefined, /^S3_ENDPOINT: a user or password in the URL is not allowed; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY$/],
      // Nor quoted when the scheme is wrong. Got: "s3://AKIAX:SecretKey@host:9000" is not an http(s) URL.
      [{ S3_BUCKET: 'files', S3_ENDPOINT: 's3://AKIAX:SecretKey@127.0.0.1:9000' }, undefined, /^S3_ENDPOINT: a user or password in the URL is not allowed/],
      [{ S3_BUCKET: 'files', S3_ENDPOINT: 'ftp://127.0.0.1:9000' }, undefined, /^S3_ENDPOINT: not an http\(s\) URL$/],
    ];
    for (const [env, file, message] of cases) {
      assert.throws(
        () => loadConfigWithFile(env, configSource(env, file)),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        `${JSON.stringify(env)} ${file ?? ''}`,
      );
    }
    // V8 quotes the text around a JSON syntax error; a secret there must not reach the message.
    // Got: ..."ESS_KEY": 'wJalrSecretXXXXXXXX"... is not valid JSON (and a users hash likewise).
    const secrets: Array<[Record<string, string>, string | undefined]> = [
      [{}, writeJson(`{ "S3_BUCKET": "b", "AWS_SECRET_ACCESS_KEY": 'wJalrSecretXXXXXXXX' }`, tempDir())],
      [{}, writeJson(`{ "FTP_PASSWORD": Sup3rS3cretXX }`, tempDir())],
      [{ FTP_USERS_JSON: `{ "users": [ { "name": "a", "password": 'scrypt$SecretHashXX' } ] }` }, undefined],
    ];
    for (const [env, file] of secrets) {
      assert.throws(
        () => loadConfigWithFile(env, configSource(env, file)),
        (err: unknown) => err instanceof ConfigError && /not valid JSON/.test(err.message) && !/wJalr|Sup3r|scrypt\$/.test(err.message),
        JSON.stringify(env),
      );
    }
    // The variable that named the file is named when it is at fault.
    assert.throws(() => loadConfigWithFile({ S3FTP_CONFIG: '/nonexistent.json' }, configSource({ S3FTP_CONFIG: '/nonexistent.json' }, undefined)), /^ConfigError: S3FTP_CONFIG: \/nonexistent\.json: cannot read/);
  });

  test('the README documents every setting the configuration reads', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const sources = ['src/config/index.ts', 'src/config/file.ts'].map((f) => readFileSync(join(ROOT, f), 'utf8')).join('\n');
    const names = new Set([...sources.matchAll(/(?:env\.|env, ')([A-Z][A-Z0-9_]+)/g)].map((m) => m[1]!));
    names.add('S3FTP_CONFIG');
    assert.ok(names.size > 20, `found ${names.size} settings`);
    const undocumented = [...names].filter((name) => !readme.includes(`\`${name}\``));
    assert.deepEqual(undocumented, []);
  });
});

describe('command line', () => {
  test('--help and help print the usage and exit 0; an unknown command or option exits 2', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const help = await runCli(args);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /^Usage: s3ftp \[command\] \[--config FILE\]/);
      for (const command of ['serve', 'check-config', 'hash-password']) assert.ok(help.stdout.includes(command), command);
    }
    const version = await runCli(['--version']);
    assert.equal(version.stdout.trim(), `s3ftp ${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}`);
    const unknown = await runCli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^s3ftp: unknown command "frobnicate"/);
    const option = await runCli(['serve', '--port', '21']);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /^s3ftp: unknown option --port/);
    assert.equal((await runCli(['--config'])).code, 2);
  });

  test('check-config: exit 0 with a summary; exit 1 with one line for a bad setting', async () => {
    const dir = tempDir();
    const ok = await runCli(['check-config'], { DATA_DIR: join(dir, 'data'), FTP_USER: 'u', FTP_PASSWORD: 'secret-password' });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^configuration: ok \(environment\)$/m);
    assert.match(ok.stdout, /^storage: ok \(local directory .*\/data answered\)$/m);
    assert.ok(!ok.stdout.includes('secret-password'), 'no secret in the summary');
    const bad = await runCli(['check-config'], { FTP_PASV_PORTS: '10-20' });
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, 's3ftp: invalid configuration: FTP_PASV_PORTS: "10-20" is not a port range such as 30000-30100 (ports 1024-65535)\n');
    const file = writeJson({ FTP_PORT: 'twenty-one' });
    const fromFile = await runCli(['check-config', '--config', file]);
    assert.equal(fromFile.code, 1);
    assert.equal(fromFile.stderr, `s3ftp: invalid configuration: FTP_PORT: "twenty-one" is not a whole number (set in ${file})\n`);
    // A key the configuration never reads is a misspelling: refused, named.
    const typo = await runCli(['check-config', `--config=${writeJson({ FTP_PROT: 21, DATA_DIR: dir })}`]);
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /^s3ftp: invalid configuration: "FTP_PROT" in .* is not used by this configuration/);
  });

  test('check-config: exit 1 when the storage cannot be reached', async () => {
    const res = await runCli(['check-config'], {
      S3_BUCKET: 'nowhere',
      S3_ENDPOINT: 'http://127.0.0.1:9',
      AWS_ACCESS_KEY_ID: 'x',
      AWS_SECRET_ACCESS_KEY: 'y',
      S3_REQUEST_TIMEOUT: '2',
    });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^s3ftp: storage unreachable: s3:\/\/nowhere\/ at http:\/\/127\.0\.0\.1:9: bucket nowhere: /);
    assert.equal(res.stderr.trim().split('\n').length, 1);
  });

  test('check-config against the test MinIO: exit 0; a missing bucket: exit 1', async (t) => {
    const s3 = await getS3();
    if (!s3) return t.skip('MinIO is not available');
    const ok = await runCli(['check-config'], s3Settings(s3, 'check'));
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`^storage: ok \\(s3://${s3.bucket}/check at `, 'm'));
    const missing = await runCli(['check-config'], { ...s3Settings(s3, ''), S3_BUCKET: 'no-such-bucket-here' });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /storage unreachable: s3:\/\/no-such-bucket-here\//);
  });

  test('serve reads the config file, the environment overrides it, and SIGTERM stops it with 0', async () => {
    const dir = tempDir();
    const file = writeJson({ FTP_PORT: 1, FTP_USER: 'filed', FTP_PASSWORD: 'from-file', DATA_DIR: 'data', HEALTH_PORT: 0 }, dir);
    // FTP_PORT=1 from the file would fail to bind; the environment's 0 wins.
    const server = await startServerProcess(childEnv({ S3FTP_CONFIG: file, FTP_PORT: '0', FTP_PASSWORD: 'from-env' }), { health: true });
    try {
      assert.ok(server.port > 1);
      const ftp = await RawFtp.connect(server.port);
      await ftp.expect('USER filed', 331);
      await ftp.expect('PASS from-env', 230);
      await ftp.expect('MKD made-here', 257);
      ftp.close();
      const health = await fetch(`http://127.0.0.1:${server.healthPort}/readyz`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(health.status, 200);
      await health.body?.cancel();
      assert.ok(readFileSync(join(dir, 'data', 'made-here', '..', '..', 'config.json')), 'DATA_DIR is relative to the file');
    } finally {
      assert.equal(await server.stop(), 0);
    }
    assert.ok(server.logs.some((l) => l.event === 'shutdown' && l.signal === 'SIGTERM'));
  });
});

describe('hash-password', () => {
  const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

  test('npm run hash-password reads the password from standard input and compiles src/ alone', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    // First the fast build of the server's sources alone (no tsc over tests, bench, infra or typings).
    assert.equal(pkg.scripts['prehash-password'], 'node scripts/build.mjs');
    assert.equal(pkg.scripts.prestart, 'node scripts/build.mjs');
    const build = JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '')) as { include: string[] };
    assert.deepEqual(build.include, ['src/**/*.ts']);
    assert.match(readFileSync(join(ROOT, 'scripts', 'build.mjs'), 'utf8'), /ts\.transpileModule\(/);
    // No password in the command line (ps shows it to everyone), one on stdin.
    assert.equal(pkg.scripts['hash-password'], 'exec node dist/src/main.js hash-password');
    const hashed = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(NPM, ['run', '-s', 'hash-password'], { cwd: ROOT, env: childEnv({}), timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
      child.stdin!.end('piped secret\n');
    });
    assert.equal(hashed.code, 0, hashed.stderr);
    const [user] = parseUsersFile(JSON.stringify({ users: [{ name: 'u', password: hashed.stdout.trim() }] }));
    assert.equal(await verifyPassword(user!.password, 'piped secret'), true);
  });

  test('on a terminal it asks twice without echoing; a password argument is warned about', async (t) => {
    if (spawnSync('script', ['--version']).status !== 0) return t.skip('script(1) is not installed');
    // script(1) gives the CLI a pseudo-terminal; what it echoes comes back on stdout.
    const child = spawn('script', ['-qec', `${process.execPath} ${MAIN} hash-password`, '/dev/null'], { env: childEnv({}), stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (screen += text));
    const waitFor = async (text: string) => {
      const deadline = Date.now() + 20_000;
      while (!screen.includes(text)) {
        assert.ok(Date.now() < deadline, `no ${JSON.stringify(text)} in ${JSON.stringify(screen)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitFor('Password: ');
    child.stdin.write('tty-secret\r');
    await waitFor('Again: ');
    child.stdin.write('tty-secret\r');
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0, screen);
    assert.ok(!screen.includes('tty-secret'), `the password was echoed: ${JSON.stringify(screen)}`);
    const hash = /scrypt\$\S+/.exec(screen)?.[0];
    assert.ok(hash, screen);
    const [user] = parseUsersFile(JSON.stringify({ users: [{ name: 'u', password: hash }] }));
    assert.equal(await verifyPassword(user!.password, 'tty-secret'), true);

    const argued = await runCli(['hash-password', 'visible']);
    assert.equal(argued.code, 0);
    assert.match(argued.stderr, /^s3ftp hash-password: warning: a password on the command line is visible to other users/);
  });
});

describe('start-up failures', () => {
  test('a port in use, an address that is not local, a certificate that does not match its key: one line naming the setting, exit 2', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const inUse = await runCli([], { FTP_PORT: String(port), DATA_DIR: tempDir() });
      assert.equal(inUse.code, 2);
      assert.equal(inUse.stderr, `s3ftp: cannot start: FTP_PORT: 127.0.0.1:${port} (or FTPS_IMPLICIT_PORT / HEALTH_PORT) is already in use\n`);
    } finally {
      blocker.close();
    }
    // 192.0.2.1 (TEST-NET-1) is never an address of this machine: nothing is sent to it, the bind fails locally.
    const foreign = await runCli([], { FTP_HOST: '192.0.2.1', FTP_PORT: '0', DATA_DIR: tempDir() });
    assert.equal(foreign.code, 2);
    assert.equal(foreign.stderr, 's3ftp: cannot start: FTP_HOST: 192.0.2.1 is not an address of this machine\n');
    const a = testCertificate();
    const other = otherKey();
    const tls = { FTPS_CERT_FILE: a.cert, FTPS_KEY_FILE: other, FTP_PORT: '0', DATA_DIR: tempDir() };
    const mismatched = await runCli([], tls);
    assert.equal(mismatched.code, 2);
    assert.match(mismatched.stderr, /^s3ftp: cannot start: FTPS_CERT_FILE\/FTPS_KEY_FILE: the certificate and key cannot be used together \(.+\)\n$/);
    const checked = await runCli(['check-config'], tls);
    assert.equal(checked.code, 1);
    assert.match(checked.stderr, /^s3ftp: invalid configuration: FTPS_CERT_FILE\/FTPS_KEY_FILE: the certificate and key cannot be used together/);
  });

  test('serve logs one clear error when the storage does not answer at start, and keeps serving', { timeout: 60_000 }, async () => {
    const server = await startServerProcess(
      childEnv({ FTP_PORT: '0', FTP_USER: 'alice', FTP_PASSWORD: 'pw', S3_BUCKET: 'nowhere', S3_ENDPOINT: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', S3_REQUEST_TIMEOUT: '2' }),
    );
    try {
      const deadline = Date.now() + 30_000;
      while (!server.logs.some((l) => l.event === 'storage-unavailable') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      const line = server.logs.find((l) => l.event === 'storage-unavailable');
      assert.ok(line, 'no storage-unavailable line');
      assert.equal(line.level, 50);
      assert.match(String(line.storage), /nowhere/);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

/** A private key that belongs to no certificate of ours. */
function otherKey(): string {
  const file = join(tempDir(), 'other-key.pem');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return file;
}
