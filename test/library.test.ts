import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createServer, hashPassword, loadConfig, type Config } from '../src/index.js';
import { RawFtp } from './helpers/ftp.js';
import { childEnv } from './helpers/process.js';
import { tempDir } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url));

/** Resolves once nothing accepts on the port (connection refused). */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(true));
  });
}

test('package.json points main, exports and types at the library, and bin at the CLI', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, any>;
  assert.equal(pkg.main, './dist/src/index.js');
  assert.equal(pkg.types, './dist/src/index.d.ts');
  assert.deepEqual(pkg.exports['.'], { types: './dist/src/index.d.ts', default: './dist/src/index.js' });
  assert.deepEqual(pkg.bin, { s3ftp: 'dist/src/main.js' });
  assert.ok(existsSync(join(ROOT, pkg.main)));
});

test('importing the library starts nothing: no listener, no output, and the process ends by itself', async () => {
  // A listener, a timer or a MinIO client would keep node alive past the import.
  const script = `const m = await import(${JSON.stringify(INDEX)}); process.stdout.write(Object.keys(m).sort().join(','));`;
  const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { env: childEnv({ FTP_PORT: '2121' }), timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, '');
  const names = result.stdout.split(',');
  for (const name of ['createServer', 'loadConfig', 'ConfigError', 'hashPassword', 'StorageError']) assert.ok(names.includes(name), name);
});

test('createServer(config) serves the configured users and close() frees the port', async () => {
  const dir = tempDir();
  const config: Config = loadConfig({ FTP_PORT: '0', DATA_DIR: dir, HEALTH_PORT: '0' });
  config.users.push({ name: 'lib', password: { kind: 'plain', value: 'library-password' }, home: '' });
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  const server = await createServer(config, { logger });
  const port = server.address.port;
  try {
    assert.ok(port > 0);
    const ftp = await RawFtp.login(port, 'lib', 'library-password');
    await ftp.expect('MKD made-by-library', 257);
    ftp.close();
    assert.ok(existsSync(join(dir, 'made-by-library')));
    const ready = await fetch(`http://127.0.0.1:${server.healthAddress!.port}/readyz`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(ready.status, 200);
    await ready.body?.cancel();
  } finally {
    await server.close(0);
  }
  assert.ok(await refused(port), 'the control port is closed');
  assert.ok(await refused(server.healthAddress!.port), 'the health port is closed');
  assert.ok(lines.some((l) => l.includes('"listening"')), 'logs go to the given logger');
  // A hash from the library is what the users file takes.
  assert.match(await hashPassword('pw'), /^scrypt\$/);
});
