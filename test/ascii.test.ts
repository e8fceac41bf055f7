import assert from 'node:assert/strict';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { fromNetworkAscii, toNetworkAscii } from '../src/data/ascii.js';

const CR = 0x0d;
const LF = 0x0a;

// The byte-by-byte implementation this replaced, kept as the reference the
// chunk-level one must match byte for byte.
function referenceToNetwork(): Transform {
  let lastWasCR = false;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const out: number[] = [];
      for (const byte of chunk) {
        if (byte === LF && !lastWasCR) out.push(CR);
        out.push(byte);
        lastWasCR = byte === CR;
      }
      done(null, Buffer.from(out));
    },
  });
}

function referenceFromNetwork(): Transform {
  let pendingCR = false;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const out: number[] = [];
      for (const byte of chunk) {
        if (pendingCR && byte !== LF) out.push(CR);
        pendingCR = byte === CR;
        if (!pendingCR) out.push(byte);
      }
      done(null, Buffer.from(out));
    },
    flush(done: TransformCallback) {
      done(null, pendingCR ? Buffer.from([CR]) : undefined);
    },
  });
}

/** Runs chunks (each a string of bytes, or a Buffer) through a transform; the joined output. */
async function run(transform: Transform, chunks: Array<string | Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  const source = Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c)), { objectMode: true });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk);
      done();
    },
  });
  await pipeline(source, transform, sink);
  return Buffer.concat(out);
}

const str = (b: Buffer) => b.toString('latin1');

test('toNetworkAscii: a bare LF gets a CR, an existing CRLF is kept', async () => {
  const cases: Array<[chunks: string[], expected: string]> = [
    [[], ''],
    [[''], ''],
    [['', '', ''], ''],
    [['abc'], 'abc'],
    [['\n'], '\r\n'],
    [['\r\n'], '\r\n'],
    [['\r'], '\r'],
    [['\n\n'], '\r\n\r\n'],
    [['a\nb\n'], 'a\r\nb\r\n'],
    [['a\r\nb\n'], 'a\r\nb\r\n'],
    [['a\r\r\n'], 'a\r\r\n'],
    [['a\n\r'], 'a\r\n\r'],
    [['\r\n\n'], '\r\n\r\n'],
    // A CRLF split across chunks is one line end, not CR CR LF.
    [['a\r', '\nb'], 'a\r\nb'],
    [['a\r', '', '\nb'], 'a\r\nb'],
    [['\r', '\n'], '\r\n'],
    // A LF that starts a chunk after a chunk not ending in CR is bare.
    [['a', '\nb'], 'a\r\nb'],
    [['a\n', '\n'], 'a\r\n\r\n'],
    [['a\r\n', '\n'], 'a\r\n\r\n'],
    // A CR at the end of the last chunk stays as it is.
    [['a', 'b\r'], 'ab\r'],
    [['x\n', 'y', '', 'z\r'], 'x\r\nyz\r'],
  ];
  for (const [chunks, expected] of cases) {
    assert.equal(str(await run(toNetworkAscii(), chunks)), expected, JSON.stringify(chunks));
    assert.equal(str(await run(referenceToNetwork(), chunks)), expected, `reference: ${JSON.stringify(chunks)}`);
  }
});

test('fromNetworkAscii: CRLF becomes LF, a lone CR is kept', async () => {
  const cases: Array<[chunks: string[], expected: string]> = [
    [[], ''],
    [[''], ''],
    [['', '', ''], ''],
    [['abc'], 'abc'],
    [['\r\n'], '\n'],
    [['\n'], '\n'],
    [['\r'], '\r'],
    [['a\r\nb\r\n'], 'a\nb\n'],
    [['a\rb'], 'a\rb'],
    [['\r\r\n'], '\r\n'],
    [['\r\r'], '\r\r'],
    [['\n\r'], '\n\r'],
    [['\r\n\r\n'], '\n\n'],
    // A CRLF split across chunks, with or without empty chunks between.
    [['a\r', '\nb'], 'a\nb'],
    [['a\r', '', '', '\nb'], 'a\nb'],
    [['\r', '\n'], '\n'],
    [['\r', '\r', '\n'], '\r\n'],
    // A CR at a chunk end followed by something else is a lone CR.
    [['a\r', 'b'], 'a\rb'],
    [['a\r', '\rb'], 'a\r\rb'],
    [['a\r', '\r\nb'], 'a\r\nb'],
    // A CR at the end of the last chunk is written by the flush.
    [['a\r'], 'a\r'],
    [['a', 'b\r'], 'ab\r'],
    [['a\r', ''], 'a\r'],
    [['\r'], '\r'],
    [['x\r\n', 'y\r'], 'x\ny\r'],
  ];
  for (const [chunks, expected] of cases) {
    assert.equal(str(await run(fromNetworkAscii(), chunks)), expected, JSON.stringify(chunks));
    assert.equal(str(await run(referenceFromNetwork(), chunks)), expected, `reference: ${JSON.stringify(chunks)}`);
  }
});

/** A deterministic PRNG (mulberry32), so a failure names a seed that reproduces it. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random bytes rich in CR and LF, cut into random chunks (some empty). */
function randomChunks(random: () => number): Buffer[] {
  const alphabet = [CR, LF, CR, LF, 0x61, 0x00, 0xff];
  const chunks: Buffer[] = [];
  const count = Math.floor(random() * 8);
  for (let c = 0; c < count; c++) {
    const length = random() < 0.2 ? 0 : Math.floor(random() * 24);
    const chunk = Buffer.alloc(length);
    for (let i = 0; i < length; i++) chunk[i] = alphabet[Math.floor(random() * alphabet.length)]!;
    chunks.push(chunk);
  }
  return chunks;
}

test('both conversions match the byte-by-byte reference on random input', async () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const chunks = randomChunks(prng(seed));
    const copy = () => chunks.map((c) => Buffer.from(c));
    assert.deepEqual(await run(toNetworkAscii(), copy()), await run(referenceToNetwork(), copy()), `toNetwork seed ${seed}`);
    assert.deepEqual(await run(fromNetworkAscii(), copy()), await run(referenceFromNetwork(), copy()), `fromNetwork seed ${seed}`);
  }
});

test('the input chunks are not modified', async () => {
  const chunks = [Buffer.from('a\nb\r'), Buffer.from('\nc\r\n'), Buffer.from('d\r')];
  const before = chunks.map((c) => Buffer.from(c));
  await run(toNetworkAscii(), chunks);
  await run(fromNetworkAscii(), chunks);
  assert.deepEqual(chunks, before);
});
