import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { acceptTls, createTlsContext } from '../src/server/tls.js';
import { testFtps } from './helpers/tls.js';

/** A loopback TLS server that accepts with acceptTls and the given context; the server sides it made. */
async function tlsServer(context: () => SecureContext): Promise<{ server: Server; port: number; accepted: TLSSocket[] }> {
  const accepted: TLSSocket[] = [];
  const server = createServer((socket) => {
    server.on('close', () => socket.destroy());
    socket.on('error', () => {});
    acceptTls(socket, context(), 5000).then(
      (secure) => {
        accepted.push(secure);
        secure.on('error', () => {});
        secure.on('data', (d: Buffer) => secure.write(d));
      },
      () => socket.destroy(),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, accepted };
}

/** Connects and resolves with the cipher and protocol, or with the error the handshake ended in. */
async function handshake(port: number, options: ConnectionOptions): Promise<{ cipher: string; protocol: string; socket: TLSSocket } | Error> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    const timer = setTimeout(() => finish(new Error('handshake timed out')), 5000);
    const finish = (result: { cipher: string; protocol: string; socket: TLSSocket } | Error) => {
      clearTimeout(timer);
      if (result instanceof Error) socket.destroy();
      resolve(result);
    };
    socket.once('secureConnect', () => finish({ cipher: socket.getCipher().name, protocol: socket.getProtocol() ?? '', socket }));
    socket.once('error', finish);
    socket.once('close', () => finish(new Error('closed during the handshake')));
  });
}

for (const kind of ['rsa', 'ec'] as const) {
  describe(`TLS policy (${kind.toUpperCase()} certificate)`, () => {
    let server: Server;
    let port: number;
    const open: TLSSocket[] = [];
    before(async () => {
      const context = createTlsContext(testFtps({}, kind));
      ({ server, port } = await tlsServer(() => context));
    });
    after(async () => {
      for (const socket of open) socket.destroy();
            server.close();
    });
    const sig = kind === 'rsa' ? 'RSA' : 'ECDSA';

    test('RSA key exchange and CBC suites are refused', async () => {
      const refused = ['AES128-SHA', 'AES256-SHA', 'AES128-GCM-SHA256', 'AES256-SHA256', `ECDHE-${sig}-AES128-SHA`, `ECDHE-${sig}-AES256-SHA384`];
      for (const ciphers of refused) {
        const result = await handshake(port, { ciphers, maxVersion: 'TLSv1.2' });
        assert.ok(result instanceof Error, `${ciphers} was accepted`);
      }
    });

    test('TLS 1.0 and 1.1 are refused', async () => {
      for (const version of ['TLSv1', 'TLSv1.1'] as const) {
        // SECLEVEL=0 so that our own client is willing; the refusal must be the server's.
        const result = await handshake(port, { minVersion: version, maxVersion: version, ciphers: 'DEFAULT:@SECLEVEL=0' });
        assert.ok(result instanceof Error, `${version} was accepted`);
      }
    });

    test('ECDHE with AES-GCM or ChaCha20-Poly1305, and TLS 1.3, are accepted', async () => {
      for (const ciphers of [`ECDHE-${sig}-AES128-GCM-SHA256`, `ECDHE-${sig}-AES256-GCM-SHA384`, `ECDHE-${sig}-CHACHA20-POLY1305`]) {
        const result = await handshake(port, { ciphers, maxVersion: 'TLSv1.2' });
        assert.ok(!(result instanceof Error), `${ciphers}: ${String(result)}`);
        open.push(result.socket);
        assert.equal(result.cipher, ciphers);
        assert.equal(result.protocol, 'TLSv1.2');
      }
      const tls13 = await handshake(port, { minVersion: 'TLSv1.3' });
      assert.ok(!(tls13 instanceof Error), String(tls13));
      open.push(tls13.socket);
      assert.equal(tls13.protocol, 'TLSv1.3');
    });

    test("the server's cipher order wins over the client's", async () => {
      const result = await handshake(port, { ciphers: `ECDHE-${sig}-CHACHA20-POLY1305:ECDHE-${sig}-AES128-GCM-SHA256`, maxVersion: 'TLSv1.2' });
      assert.ok(!(result instanceof Error), String(result));
      open.push(result.socket);
      assert.equal(result.cipher, `ECDHE-${sig}-AES128-GCM-SHA256`);
    });

    test('a client-initiated renegotiation is refused', async () => {
      const result = await handshake(port, { maxVersion: 'TLSv1.2' });
      assert.ok(!(result instanceof Error), String(result));
      const { socket } = result;
      open.push(socket);
      const outcome = await new Promise<Error | null>((resolve) => {
        const timer = setTimeout(() => resolve(new Error('no answer to the renegotiation')), 5000);
        const done = (err: Error | null) => {
          clearTimeout(timer);
          resolve(err);
        };
        socket.once('error', done);
        socket.once('close', () => done(new Error('closed')));
        // A renegotiation is only driven by traffic: send something and wait for its echo.
        const started = socket.renegotiate({ rejectUnauthorized: false }, (err) => {
          if (err) return done(err);
          socket.write('ping');
          socket.once('data', () => done(null));
        });
        if (!started) done(new Error('renegotiate() refused locally'));
      });
      assert.ok(outcome instanceof Error, 'the renegotiation succeeded');
    });
  });
}

const opensslSClient = await new Promise<boolean>((resolve) => {
  execFile('openssl', ['version'], (err) => resolve(!err));
});

describe('TLS policy seen by openssl s_client', { skip: !opensslSClient && 'openssl not installed' }, () => {
  let server: Server;
  let port: number;
  before(async () => {
    const context = createTlsContext(testFtps({}, 'rsa'));
    ({ server, port } = await tlsServer(() => context));
  });
  after(() => {
        server.close();
  });

  /** Runs s_client with the arguments; resolves with whether a handshake completed, and the negotiated cipher. */
  function sClient(args: string[]): Promise<{ ok: boolean; cipher?: string }> {
    return new Promise((resolve) => {
      const child = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...args], { timeout: 10_000 }, (_err, stdout) => {
        const cipher = /Cipher is (\S+)/.exec(stdout)?.[1];
        resolve({ ok: cipher !== undefined && cipher !== '(NONE)', cipher });
      });
      child.stdin?.end('Q\n');
    });
  }

  test('refuses RSA key exchange, CBC-SHA1 and TLS 1.0/1.1; accepts ECDHE-GCM, ChaCha20 and TLS 1.3', async () => {
    for (const args of [
      ['-tls1_2', '-cipher', 'AES128-SHA'],
      ['-tls1_2', '-cipher', 'AES256-GCM-SHA384'],
      ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA'],
      ['-tls1_1', '-cipher', 'DEFAULT:@SECLEVEL=0'],
      ['-tls1', '-cipher', 'DEFAULT:@SECLEVEL=0'],
    ]) {
      assert.equal((await sClient(args)).ok, false, args.join(' '));
    }
    assert.equal((await sClient(['-tls1_2', '-cipher', 'ECDHE-RSA-AES256-GCM-SHA384'])).cipher, 'ECDHE-RSA-AES256-GCM-SHA384');
    assert.equal((await sClient(['-tls1_2', '-cipher', 'ECDHE-RSA-CHACHA20-POLY1305'])).cipher, 'ECDHE-RSA-CHACHA20-POLY1305');
    assert.equal((await sClient(['-tls1_3'])).ok, true);
  });
});

test('FTPS_CIPHERS and FTPS_MIN_VERSION are what the listener offers', async () => {
  const context = createTlsContext(testFtps({ ciphers: 'TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-CHACHA20-POLY1305', minVersion: 'TLSv1.3' }));
  const { server, port } = await tlsServer(() => context);
  try {
    assert.ok((await handshake(port, { maxVersion: 'TLSv1.2' })) instanceof Error, 'TLS 1.2 accepted under FTPS_MIN_VERSION=TLSv1.3');
    const result = await handshake(port, {});
    assert.ok(!(result instanceof Error), String(result));
    assert.equal(result.cipher, 'TLS_CHACHA20_POLY1305_SHA256');
    result.socket.destroy();
  } finally {
        server.close();
  }
});
