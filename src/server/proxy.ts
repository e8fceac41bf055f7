import { isIP, SocketAddress, type Socket } from 'node:net';

/**
 * The PROXY protocol (HAProxy, versions 1 and 2), as a load balancer such as
 * an AWS NLB puts it in front of the client's bytes to say who the client is.
 * Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 *
 * All parsing of the header happens here, before a Session exists: the
 * session then only ever sees the client's address and the client's bytes.
 */

/** A load balancer sends the header at once; a peer that does not is not one. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

/** Version 2 starts with these 12 bytes (they cannot begin any FTP command). */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The longest version 1 line, CRLF included (spec section 2.1). */
const V1_MAX_BYTES = 107;
const V2_HEADER_BYTES = 16;

/** What the header said. `source` is absent for LOCAL (v2) and UNKNOWN (v1): the connection is the proxy's own. */
export interface ProxyHeader {
  version: 1 | 2;
  source?: { address: string; port: number };
  destination?: { address: string; port: number };
}

export class ProxyProtocolError extends Error {
  override name = 'ProxyProtocolError';
}

/**
 * Parses a header at the start of `buffer`. Returns the header and its length,
 * 'incomplete' while more bytes could still make a valid header, and throws
 * ProxyProtocolError as soon as they cannot.
 */
export function parseProxyHeader(buffer: Buffer): { header: ProxyHeader; length: number } | 'incomplete' {
  if (startsLike(buffer, V2_SIGNATURE)) {
    return buffer.length < V2_SIGNATURE.length ? 'incomplete' : parseV2(buffer);
  }
  if (startsLike(buffer, V1_PREFIX)) {
    return buffer.length < V1_PREFIX.length ? 'incomplete' : parseV1(buffer);
  }
  throw new ProxyProtocolError('no PROXY protocol header');
}

/** True when buffer and prefix agree on their common length. */
function startsLike(buffer: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buffer.length, prefix.length);
  return buffer.subarray(0, n).equals(prefix.subarray(0, n));
}

function parseV1(buffer: Buffer): { header: ProxyHeader; length: number } | 'incomplete' {
  const end = buffer.indexOf('\r\n', 0, 'latin1');
  if (end < 0) {
    if (buffer.length >= V1_MAX_BYTES) throw new ProxyProtocolError('PROXY v1 line too long');
    return 'incomplete';
  }
  if (end + 2 > V1_MAX_BYTES) throw new ProxyProtocolError('PROXY v1 line too long');
  const fields = buffer.subarray(0, end).toString('latin1').split(' ');
  const length = end + 2;
  if (fields[1] === 'UNKNOWN') return { header: { version: 1 }, length };
  const [, family, src, dst, srcPort, dstPort] = fields;
  const ipVersion = family === 'TCP4' ? 4 : family === 'TCP6' ? 6 : 0;
  if (fields.length !== 6 || ipVersion === 0) throw new ProxyProtocolError('malformed PROXY v1 line');
  if (isIP(src ?? '') !== ipVersion || isIP(dst ?? '') !== ipVersion) {
    throw new ProxyProtocolError(`PROXY v1 addresses are not ${family} addresses`);
  }
  return {
    header: {
      version: 1,
      source: { address: ipVersion === 6 ? canonicalIPv6(src!) : src!, port: v1Port(srcPort) },
      destination: { address: ipVersion === 6 ? canonicalIPv6(dst!) : dst!, port: v1Port(dstPort) },
    },
    length,
  };
}

function v1Port(text: string | undefined): number {
  // Decimal without leading zeros, 0-65535 (spec section 2.1).
  if (!text || !/^(0|[1-9]\d{0,4})$/.test(text) || Number(text) > 65535) throw new ProxyProtocolError('malformed PROXY v1 port');
  return Number(text);
}

function parseV2(buffer: Buffer): { header: ProxyHeader; length: number } | 'incomplete' {
  if (buffer.length < V2_HEADER_BYTES) return 'incomplete';
  const versionCommand = buffer[12]!;
  const familyProtocol = buffer[13]!;
  const length = V2_HEADER_BYTES + buffer.readUInt16BE(14);
  if (versionCommand >> 4 !== 2) throw new ProxyProtocolError('unsupported PROXY protocol version');
  const command = versionCommand & 0x0f;
  if (command > 1) throw new ProxyProtocolError('unknown PROXY v2 command');
  if (buffer.length < length) return 'incomplete';
  // LOCAL: the proxy's own connection (a health check); the address block is ignored.
  if (command === 0) return { header: { version: 2 }, length };
  const body = buffer.subarray(V2_HEADER_BYTES, length);
  switch (familyProtocol) {
    case 0x11: // TCP over IPv4
      if (body.length < 12) throw new ProxyProtocolError('PROXY v2 IPv4 address block too short');
      return {
        header: {
          version: 2,
          source: { address: ipv4(body.subarray(0, 4)), port: body.readUInt16BE(8) },
          destination: { address: ipv4(body.subarray(4, 8)), port: body.readUInt16BE(10) },
        },
        length,
      };
    case 0x21: // TCP over IPv6
      if (body.length < 36) throw new ProxyProtocolError('PROXY v2 IPv6 address block too short');
      return {
        header: {
          version: 2,
          source: { address: ipv6(body.subarray(0, 16)), port: body.readUInt16BE(32) },
          destination: { address: ipv6(body.subarray(16, 32)), port: body.readUInt16BE(34) },
        },
        length,
      };
    case 0x00: // UNSPEC: the receiver must use the connection's own addresses
      return { header: { version: 2 }, length };
    default:
      throw new ProxyProtocolError('PROXY v2 transport is not TCP');
  }
}

function ipv4(bytes: Buffer): string {
  return [...bytes].join('.');
}

function ipv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/**
 * The form socket.remoteAddress would have (RFC 5952, '2001:db8::1'), so the
 * address compares equal to the one a client names in EPRT; an IPv4-mapped
 * address becomes the IPv4 client it stands for, as plainAddress does.
 */
function canonicalIPv6(text: string): string {
  return new SocketAddress({ address: text, family: 'ipv6' }).address.replace(/^::ffff:(?=\d+\.)/i, '');
}

/**
 * Reads a PROXY header off the start of a connection. Bytes after the header
 * are pushed back into the socket, so whoever reads it next (the Session, or
 * a TLS handshake) sees the client's stream from its first byte. Rejects with
 * ProxyProtocolError when the peer sends anything else, closes, or stays
 * silent past `timeoutMs`; the caller then drops the connection.
 */
export function readProxyHeader(socket: Socket, timeoutMs = PROXY_HEADER_TIMEOUT_MS): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const finish = (err: Error | undefined, header?: ProxyHeader, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('error', onError);
      if (err) return reject(err);
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve(header!);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buffered = Buffer.concat([buffered, chunk]);
        let parsed: ReturnType<typeof parseProxyHeader>;
        try {
          parsed = parseProxyHeader(buffered);
        } catch (err) {
          return finish(err as Error);
        }
        if (parsed !== 'incomplete') return finish(undefined, parsed.header, buffered.subarray(parsed.length));
      }
    };
    const onEnd = () => finish(new ProxyProtocolError('connection closed before the PROXY header'));
    const onError = (err: Error) => finish(new ProxyProtocolError(`connection failed before the PROXY header: ${err.message}`));
    const timer = setTimeout(() => finish(new ProxyProtocolError('no PROXY header in time')), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('error', onError);
  });
}
