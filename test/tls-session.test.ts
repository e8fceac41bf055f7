import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect, type TLSSocket } from 'node:tls';
import {
  acceptDataTls,
  acceptTls,
  closeNotified,
  createTlsContext,
  sameTlsSession,
  sessionContext,
  TlsError,
  tlsRefusalText,
  type TlsSessionContext,
} from '../src/server/tls.js';
import { testFtps } from './helpers/tls.js';

type Accept = (socket: Socket) => Promise<TLSSocket>;

/** A loopback server that hands each connection to whatever `accept` is set to at the time. */
class Harness {
  accept: Accept = () => Promise.reject(new Error('no accept set'));
  /** Server sides of the finished handshakes, and refusals, in order. */
  readonly results: Array<TLSSocket | Error> = [];
  readonly #sockets = new Set<Socket>();
  server!: Server;
  port = 0;

  async start(): Promise<void> {
    this.server = createServer((socket) => {
      this.#sockets.add(socket);
      socket.on('error', () => {});
      this.accept(socket).then(
        (secure) => {
          secure.on('error', () => {});
          this.#sockets.add(secure);
          this.results.push(secure);
        },
        (err: Error) => {
          socket.destroy();
          this.results.push(err);
        },
      );
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** The server side of the latest connection, once its handshake has ended. */
  async latest(): Promise<TLSSocket | Error> {
    const count = this.results.length;
    for (let i = 0; i < 200 && this.results.length === count; i++) await new Promise((r) => setTimeout(r, 10));
    const result = this.results.at(-1);
    assert.ok(result, 'the server never finished the handshake');
    return result;
  }

  stop(): void {
    for (const socket of this.#sockets) socket.destroy();
    this.server.close();
  }
}

/** Client side: connects (resuming session if given); resolves after the handshake and the first ticket, if any. */
async function client(port: number, maxVersion: 'TLSv1.2' | 'TLSv1.3', session?: Buffer): Promise<{ socket: TLSSocket; session?: Buffer; reused: boolean }> {
  const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, maxVersion, session });
  socket.on('error', () => {});
  let ticket: Buffer | undefined;
  socket.on('session', (s: Buffer) => (ticket ??= s));
  await once(socket, 'secureConnect');
  // TLS 1.3 tickets come after the handshake; give them a moment.
  for (let i = 0; i < 50 && !ticket && socket.getProtocol() === 'TLSv1.3'; i++) await new Promise((r) => setTimeout(r, 10));
  return { socket, session: ticket ?? socket.getSession(), reused: socket.isSessionReused() };
}

for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
  describe(`TLS sessions are bound to their control connection (${version})`, () => {
    const harness = new Harness();
    const ftps = testFtps();
    const clients: TLSSocket[] = [];
    before(() => harness.start());
    after(() => {
      for (const socket of clients) socket.destroy();
      harness.stop();
    });

    test("a session issued through context A resumes through A, never through B's", async () => {
      const a = sessionContext(ftps);
      const b = sessionContext(ftps);
      harness.accept = (socket) => acceptTls(socket, a, 5000);
      const control = await client(harness.port, version);
      clients.push(control.socket);
      const controlServer = await harness.latest();
      assert.ok(!(controlServer instanceof Error), String(controlServer));
      assert.ok(control.session, 'no session to resume');

      harness.accept = (socket) => acceptTls(socket, b, 5000);
      const other = await client(harness.port, version, control.session);
      clients.push(other.socket);
      const otherServer = await harness.latest();
      assert.ok(!(otherServer instanceof Error), String(otherServer));
      assert.equal(other.reused, false, 'resumed through another connection’s context');
      assert.equal(otherServer.isSessionReused(), false);
      assert.equal(sameTlsSession(controlServer, otherServer), false);

      harness.accept = (socket) => acceptTls(socket, a, 5000);
      const data = await client(harness.port, version, control.session);
      clients.push(data.socket);
      const dataServer = await harness.latest();
      assert.ok(!(dataServer instanceof Error), String(dataServer));
      assert.equal(data.reused, true, 'did not resume through its own context');
      assert.equal(sameTlsSession(controlServer, dataServer), true);
      assert.equal(sameTlsSession(dataServer, controlServer), false, 'the control connection itself resumed nothing');
    });

    test('acceptDataTls refuses a data connection that does not resume, and revokes what it may have been given', async () => {
      const a = sessionContext(ftps);
      harness.accept = (socket) => acceptTls(socket, a, 5000);
      const control = await client(harness.port, version);
      clients.push(control.socket);
      const controlServer = await harness.latest();
      assert.ok(!(controlServer instanceof Error), String(controlServer));

      // The owner's data connection resumes and is accepted.
      harness.accept = (socket) => acceptDataTls(socket, controlServer, a, { timeoutMs: 5000, requireReuse: true, upload: false });
      const data = await client(harness.port, version, control.session);
      clients.push(data.socket);
      const dataServer = await harness.latest();
      assert.ok(!(dataServer instanceof Error), String(dataServer));

      // A stranger's full handshake is refused; a ticket it was sent meanwhile must not resume later.
      // In TLS 1.2 the server may close before the client has read its Finished: the client fails too.
      const stranger = await client(harness.port, version).catch(() => undefined);
      if (stranger) clients.push(stranger.socket);
      const refused = await harness.latest();
      assert.ok(refused instanceof TlsError && refused.code === 'TLS_SESSION_NOT_REUSED', String(refused));
      assert.equal(tlsRefusalText(refused), 'Data connection must resume the TLS session of the control connection.');
      if (stranger?.session) {
        const again = await client(harness.port, version, stranger.session).catch(() => undefined);
        if (again) clients.push(again.socket);
        assert.equal(again?.reused ?? false, false, 'the stranger resumed the session it was given');
        assert.ok((await harness.latest()) instanceof TlsError);
      }
      // Revoked for the owner as well: fail closed, the owner logs in again.
      const late = await client(harness.port, version, control.session).catch(() => undefined);
      if (late) clients.push(late.socket);
      assert.equal(late?.reused ?? false, false);
      assert.ok((await harness.latest()) instanceof TlsError);
    });
  });
}

test('one shared listener context lets any connection resume any other: why sessions need their own', async () => {
  const harness = new Harness();
  await harness.start();
  const shared = createTlsContext(testFtps());
  harness.accept = (socket) => acceptTls(socket, shared, 5000);
  try {
    const victim = await client(harness.port, 'TLSv1.3');
    const attacker = await client(harness.port, 'TLSv1.3');
    const attackerData = await client(harness.port, 'TLSv1.3', attacker.session);
    assert.equal(attackerData.reused, true);
    for (const c of [victim, attacker, attackerData]) c.socket.destroy();
  } finally {
    harness.stop();
  }
});

test('a refused handshake gives a fixed 522 text; OpenSSL detail stays in the cause', async () => {
  const harness = new Harness();
  await harness.start();
  const session: TlsSessionContext = sessionContext(testFtps());
  harness.accept = (socket) => acceptTls(socket, session, 5000);
  try {
    const raw = connectTcp(harness.port, '127.0.0.1');
    raw.on('error', () => {});
    await once(raw, 'connect');
    raw.write('GET / HTTP/1.0\r\n\r\n');
    const result = await harness.latest();
    raw.destroy();
    assert.ok(result instanceof TlsError && result.code === 'TLS_HANDSHAKE_FAILED', String(result));
    assert.match(String((result.cause as Error).message), /SSL|ssl|wrong version/);
    for (const err of [result, new TlsError('TLS_HANDSHAKE_TIMEOUT', 'x'), new TlsError('TLS_SESSION_NOT_REUSED', 'x'), new Error('error:0A00010B:SSL routines:ssl3_get_record:wrong version number')]) {
      const text = tlsRefusalText(err);
      assert.doesNotMatch(text, /error:|routines|\/|\\|\.c:/, text);
    }
    assert.equal(tlsRefusalText(result), 'TLS handshake on the data connection failed.');
  } finally {
    harness.stop();
  }
});

test('a per-connection context costs about a millisecond', () => {
  const ftps = testFtps();
  sessionContext(ftps);
  const started = process.hrtime.bigint();
  for (let i = 0; i < 50; i++) sessionContext(ftps);
  const ms = Number(process.hrtime.bigint() - started) / 1e6 / 50;
  assert.ok(ms < 20, `${ms.toFixed(2)} ms per context`);
});

/**
 * closeNotified rests on two things in Node: the reader's own 'end' listener
 * runs before the TLS layer is handed the TCP end, and the TLS layer
 * decrypts every chunk it is given at once, however its reader is paced.
 * A break in either shows here, with the TLS side paused or read slowly.
 */
describe('closeNotified: close_notify told from a bare FIN, however the TLS side is read', () => {
  const context = createTlsContext(testFtps());
  for (const pace of ['flowing', 'paused 300 ms', 'resumed every 5 ms'] as const) {
    for (const end of ['close_notify', 'bare FIN'] as const) {
      test(`${end}, ${pace}`, async () => {
        const server = createServer({ allowHalfOpen: true });
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        const seen = new Promise<{ bytes: number; notified: boolean }>((resolve) =>
          server.once('connection', async (tcp: Socket) => {
            tcp.on('error', () => {});
            const secure = await acceptTls(tcp, context, 5000, { watchEnd: true });
            secure.on('error', () => {});
            let bytes = 0;
            let timer: NodeJS.Timeout | undefined;
            if (pace !== 'flowing') secure.pause();
            if (pace === 'paused 300 ms') setTimeout(() => secure.resume(), 300);
            if (pace === 'resumed every 5 ms') timer = setInterval(() => (secure.resume(), setImmediate(() => secure.pause())), 5);
            secure.on('data', (chunk: Buffer) => (bytes += chunk.length));
            secure.once('end', () => {
              clearInterval(timer);
              resolve({ bytes, notified: closeNotified(secure) });
            });
          }),
        );
        const raw = connectTcp((server.address() as AddressInfo).port, '127.0.0.1');
        raw.on('error', () => {});
        await once(raw, 'connect');
        const client = connect({ socket: raw, rejectUnauthorized: false });
        client.on('error', () => {});
        await once(client, 'secureConnect');
        const body = Buffer.alloc(4 << 20, 1);
        if (end === 'close_notify') client.end(body);
        else client.write(body, () => raw.end());
        try {
          assert.deepEqual(await seen, { bytes: body.length, notified: end === 'close_notify' });
        } finally {
          client.destroy();
          raw.destroy();
          server.close();
        }
      });
    }
  }
});
