import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;

/** TYPE A on RETR: a LF not already preceded by CR becomes CRLF. */
export function toNetworkAscii(): Transform {
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

/** TYPE A on STOR: CRLF becomes LF; a lone CR is kept. */
export function fromNetworkAscii(): Transform {
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
