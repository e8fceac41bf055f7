import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { StorageError, type HashAlgorithm } from './types.js';

/** An incremental digest with the one interface both drivers need. */
export interface Digest {
  update(chunk: Buffer): void;
  /** Lowercase hex; call once. */
  hex(): string;
}

const NODE_HASHES: Record<Exclude<HashAlgorithm, 'CRC32'>, string> = { 'SHA-256': 'sha256', 'SHA-1': 'sha1', MD5: 'md5' };

/** A fresh digest for one of the HASH command's algorithms. */
export function createDigest(algorithm: HashAlgorithm): Digest {
  if (algorithm === 'CRC32') return crc32Digest();
  const hash: Hash = createHash(NODE_HASHES[algorithm]);
  return { update: (chunk) => void hash.update(chunk), hex: () => hash.digest('hex') };
}

/** Reads a stream to its end through a digest; returns the hex value and the byte count. */
export async function digestStream(
  source: Readable,
  algorithm: HashAlgorithm,
  signal?: AbortSignal,
): Promise<{ hash: string; size: number }> {
  const digest = createDigest(algorithm);
  let size = 0;
  const onAbort = (): void => void source.destroy(new StorageError('Unavailable', 'hash aborted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of source) {
      const buf = chunk as Buffer;
      size += buf.length;
      digest.update(buf);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return { hash: digest.hex(), size };
}

/** The value is eight hex digits, as other FTP servers (and `crc32` tools) print it. */
function crc32Digest(): Digest {
  // zlib.crc32 arrived in Node 20.15; engines allows 20.0, so keep a table fallback.
  const native = (zlib as { crc32?: (data: Buffer, value?: number) => number }).crc32;
  let value = 0;
  return {
    update: (chunk) => void (value = native ? native(chunk, value) : crc32Table(chunk, value)),
    hex: () => (value >>> 0).toString(16).padStart(8, '0'),
  };
}

let table: Uint32Array | undefined;

function crc32Table(chunk: Buffer, value: number): number {
  table ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let crc = ~value >>> 0;
  for (const byte of chunk) crc = (table[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8);
  return ~crc >>> 0;
}
