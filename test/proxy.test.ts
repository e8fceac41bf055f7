import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { parseProxyHeader, ProxyProtocolError, readProxyHeader } from '../src/server/proxy.js';
import { RawFtp } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';
import { testFtps } from './helpers/tls.js';

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A PROXY v1 line for a TCP4 client. */
function v1(source: string, sourcePort = 40000, destination = '10.0.0.1', destinationPort = 21): Buffer {
  return Buffer.from(`PROXY TCP4 ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`, 'latin1');
}

/** A PROXY v2 header for a TCP4 client, optionally with TLVs (as an AWS NLB adds). */
function v2(source: string, sourcePort = 40000, tlvs = Buffer.alloc(0)): Buffer {
  const addresses = Buffer.alloc(12);
  source.split('.').forEach((b, i) => addresses.writeUInt8(Number(b), i));
  [10, 0, 0, 1].forEach((b, i) => addresses.writeUInt8(b, 4 + i));
  addresses.writeUInt16BE(sourcePort, 8);
  addresses.writeUInt16BE(21, 10);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(addresses.length + tlvs.length);
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11]), length, addresses, tlvs]);
}

function v2Ipv6(source: Buffer): Buffer {
  const body = Buffer.alloc(36);
  source.copy(body, 0);
  body.writeUInt16BE(1234, 32);
  body.writeUInt16BE(21, 34);
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x21, 0x00, 36]), body]);
}

describe('PROXY header parsing', () => {
  test('version 1: TCP4, TCP6 (in the form socket addresses take) and UNKNOWN', () => {
    const tcp4 = parseProxyHeader(Buffer.concat([v1('192.0.2.7', 5555), Buffer.from('USER x\r\n')]));
    assert.notEqual(tcp4, 'incomplete');
    if (tcp4 === 'incomplete') return;
    assert.deepEqual(tcp4.header, { version: 1, source: { address: '192.0.2.7', port: 5555 }, destination: { address: '10.0.0.1', port: 21 } });
    assert.equal(tcp4.length, v1('192.0.2.7', 5555).length);
    const tcp6 = parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8:0:0:0:0:0:1 2001:db8::2 1 2\r\n'));
    assert.equal(tcp6 !== 'incomplete' && tcp6.header.source?.address, '2001:db8::1');
    const unknown = parseProxyHeader(Buffer.from('PROXY UNKNOWN whatever\r\n'));
    assert.deepEqual(unknown !== 'incomplete' && unknown.header, { version: 1 });
  });

  test('version 2: TCP4 with TLVs, TCP6, IPv4-mapped TCP6 and LOCAL', () => {
    const tlv = Buffer.from([0xea, 0x00, 0x05, 0x01, 0x76, 0x70, 0x63, 0x65]); // AWS VPC endpoint id TLV
    const tcp4 = parseProxyHeader(Buffer.concat([v2('198.51.100.9', 6000, tlv), Buffer.from('rest')]));
    assert.ok(tcp4 !== 'incomplete');
    assert.deepEqual(tcp4.header.source, { address: '198.51.100.9', port: 6000 });
    assert.equal(tcp4.length, 16 + 12 + tlv.length);
    const ipv6 = Buffer.alloc(16);
    ipv6.writeUInt16BE(0x2001, 0);
    ipv6.writeUInt16BE(0x0db8, 2);
    ipv6.writeUInt16BE(7, 14);
    const tcp6 = parseProxyHeader(v2Ipv6(ipv6));
    assert.equal(tcp6 !== 'incomplete' && tcp6.header.source?.address, '2001:db8::7');
    const mapped = Buffer.from('00000000000000000000ffffc0000201', 'hex');
    const fromMapped = parseProxyHeader(v2Ipv6(mapped));
    assert.equal(fromMapped !== 'incomplete' && fromMapped.header.source?.address, '192.0.2.1');
    const local = parseProxyHeader(Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]));
    assert.deepEqual(local !== 'incomplete' && local.header, { version: 2 });
  });

  test('a header cut anywhere is incomplete, not an error', () => {
    for (const header of [v1('192.0.2.7'), v2('192.0.2.7')]) {
      for (let n = 1; n < header.length; n++) assert.equal(parseProxyHeader(header.subarray(0, n)), 'incomplete', `${n} bytes`);
    }
  });

  test('anything else is refused at the first byte that cannot be a header', () => {
    const bad = [
      'USER alice\r\n',
      'P',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n',
      'PROXY TCP4 ::1 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n',
      'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
      `PROXY TCP4 ${'1'.repeat(120)}`,
    ];
    for (const text of bad) {
      if (text === 'P') {
        assert.equal(parseProxyHeader(Buffer.from(text)), 'incomplete');
        assert.throws(() => parseProxyHeader(Buffer.from('PX')), ProxyProtocolError);
        continue;
      }
      assert.throws(() => parseProxyHeader(Buffer.from(text)), ProxyProtocolError, text);
    }
    const udp = v2('192.0.2.7');
    udp[13] = 0x12;
    assert.throws(() => parseProxyHeader(udp), /not TCP/);
    const version3 = v2('192.0.2.7');
    version3[12] = 0x31;
    assert.throws(() => parseProxyHeader(version3), /version/);
  });
});

describe('readProxyHeader on a socket', () => {
  let server: ReturnType<typeof createServer>;
  let accepted: Array<(socket: Socket) => void> = [];
  before(async () => {
    server = createServer({ allowHalfOpen: false }, (socket) => accepted.shift()?.(socket));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
  });
  after(() => server.close());

  const pair = async (): Promise<{ client: Socket; peer: Socket }> => {
    const peer = new Promise<Socket>((resolve) => accepted.push(resolve));
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    return { client, peer: await peer };
  };

  test('bytes after the header are handed back to the next reader, even in the same segment', async () => {
    const { client, peer } = await pair();
    client.write(Buffer.concat([v2('203.0.113.5'), Buffer.from('NOOP\r\n')]));
    const header = await readProxyHeader(peer, 2000);
    assert.equal(header.source?.address, '203.0.113.5');
    const [data] = (await once(peer, 'data')) as [Buffer];
    assert.equal(data.toString(), 'NOOP\r\n');
    client.destroy();
    peer.destroy();
  });

  test('a header sent a byte at a time is read', async () => {
    const { client, peer } = await pair();
    const reading = readProxyHeader(peer, 5000);
    for (const byte of v1('203.0.113.6')) {
      client.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await reading).source?.address, '203.0.113.6');
    client.destroy();
    peer.destroy();
  });

  test('silence past the deadline and an early close are refused', async () => {
    const silent = await pair();
    await assert.rejects(readProxyHeader(silent.peer, 200), /no PROXY header in time/);
    silent.client.destroy();
    silent.peer.destroy();
    const early = await pair();
    const reading = readProxyHeader(early.peer, 5000);
    early.client.end(Buffer.from('PROXY TCP4'));
    await assert.rejects(reading, /closed before the PROXY header/);
    early.peer.destroy();
  });
});

for (const driver of await drivers()) {
  describe(`PROXY protocol on the control listener (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    const logLines: string[] = [];
    before(async () => {
      server = await startTestServer(
        driver,
        { proxyProtocol: true, ftps: testFtps({ requireTlsLogin: false, requireProtP: false, requireSessionReuse: false }) },
        { logLines },
      );
    });
    after(async () => {
      await server?.close();
    });

    /** A control connection that says it comes (through a load balancer) from `header`. */
    const proxied = async (header: Buffer): Promise<RawFtp> => {
      const socket = connect(server.port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(header);
      const ftp = RawFtp.over(socket);
      const greeting = await ftp.read();
      assert.equal(greeting.code, 220);
      return ftp;
    };

    test('v1: the session, its log and STAT know the client by the header; PORT goes only there', async () => {
      const ftp = await proxied(v1('192.0.2.10'));
      await ftp.expect(`USER ${USER}`, 331);
      await ftp.expect(`PASS ${PASSWORD}`, 230);
      const stat = await ftp.expect('STAT', 211);
      assert.ok(stat.lines.includes(' Connected from 192.0.2.10') || stat.lines.some((l) => l.endsWith('Connected from 192.0.2.10')), stat.lines.join('|'));
      // The load balancer (here 127.0.0.1) is not the client: data may not go there.
      await ftp.expect('PORT 192,0,2,10,200,10', 200);
      await ftp.expect('EPRT |1|192.0.2.10|51210|', 200);
      await ftp.expect('PORT 127,0,0,1,200,10', 504);
      ftp.close();
      const starts = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'session-start');
      assert.equal(starts.at(-1)?.client, '192.0.2.10');
    });

    test('EPSV takes the network protocol of the client the header names', async () => {
      const ftp = await proxied(Buffer.from('PROXY TCP6 2001:db8::10 2001:db8::1 40000 21\r\n', 'latin1'));
      await ftp.expect(`USER ${USER}`, 331);
      await ftp.expect(`PASS ${PASSWORD}`, 230);
      // An IPv6 client behind an IPv4 balancer. Got: 522 "use (1)" (the balancer's family).
      await ftp.expect('EPSV 2', 229);
      await ftp.expect('EPSV 1', 522);
      ftp.close();
    });

    test('v2 with commands in the same segment as the header', async () => {
      const socket = connect(server.port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(Buffer.concat([v2('198.51.100.20'), Buffer.from(`USER ${USER}\r\nPASS ${PASSWORD}\r\nSTAT\r\n`)]));
      const ftp = RawFtp.over(socket);
      assert.equal((await ftp.read()).code, 220);
      assert.equal((await ftp.read()).code, 331);
      assert.equal((await ftp.read()).code, 230);
      const stat = await ftp.read();
      assert.ok(stat.lines.some((l) => l.endsWith('Connected from 198.51.100.20')), stat.lines.join('|'));
      ftp.close();
    });

    test('passive data connections must come from the client the header named (NLB client IP preservation)', async () => {
      // The data connection comes from 127.0.0.1, so it is accepted only when that is the proxied client.
      const same = await proxied(v2('127.0.0.1'));
      await same.expect(`USER ${USER}`, 331);
      await same.expect(`PASS ${PASSWORD}`, 230);
      const data = await same.passive();
      await same.expect('NLST', 150);
      data.resume();
      await once(data, 'close');
      assert.equal((await same.read()).code, 226);
      same.close();

      const other = await proxied(v2('192.0.2.30'));
      await other.expect(`USER ${USER}`, 331);
      await other.expect(`PASS ${PASSWORD}`, 230);
      const refused = await other.passive();
      await once(refused, 'close'); // dropped: not the client's address
      other.close();
    });

    test('a connection without a header gets no greeting and is dropped', async () => {
      const socket = connect(server.port, '127.0.0.1');
      await once(socket, 'connect');
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.on('error', () => {});
      socket.write(`USER ${USER}\r\n`);
      await once(socket, 'close');
      assert.equal(Buffer.concat(received).length, 0);
      const refused = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'proxy-header-refused');
      assert.ok(refused.length >= 1);
    });

    test('implicit FTPS: the header comes before the TLS handshake', async () => {
      assert.ok(server.implicitPort);
      const raw = connect(server.implicitPort, '127.0.0.1');
      await once(raw, 'connect');
      raw.write(v1('192.0.2.40'));
      const secure = tlsConnect({ socket: raw, rejectUnauthorized: false });
      await once(secure, 'secureConnect');
      const ftp = RawFtp.over(secure);
      assert.equal((await ftp.read()).code, 220);
      await ftp.expect(`USER ${USER}`, 331);
      await ftp.expect(`PASS ${PASSWORD}`, 230);
      const stat = await ftp.expect('STAT', 211);
      assert.ok(stat.lines.some((l) => l.endsWith('Connected from 192.0.2.40')), stat.lines.join('|'));
      ftp.close();
    });
  });
}

describe('per-address limits count the proxied address, not the load balancer', () => {
  let server: TestServer;
  before(async () => {
    const [local] = await drivers();
    server = await startTestServer(local!, {
      proxyProtocol: true,
      limits: { maxConnections: 100, maxConnectionsPerAddress: 1, maxLoginFailures: 100, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 0 },
    });
  });
  after(async () => {
    await server?.close();
  });

  test('two clients behind one balancer are admitted; a second connection of one client is not', async () => {
    const open = async (source: string) => {
      const socket = connect(server.port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(v1(source));
      const ftp = RawFtp.over(socket);
      return { ftp, greeting: await ftp.read() };
    };
    const a = await open('192.0.2.1');
    const b = await open('192.0.2.2');
    const again = await open('192.0.2.1');
    assert.equal(a.greeting.code, 220);
    assert.equal(b.greeting.code, 220);
    assert.equal(again.greeting.code, 421);
    for (const c of [a, b, again]) c.ftp.close();
  });
});
