import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;

// The conversions work on whole chunks: indexOf (memchr) finds the next line
// end and whole runs between line ends are copied at once, so TYPE A costs
// about what TYPE I costs. A chunk with nothing to change is passed on as is.

/**
 * TYPE A on RETR: a LF not already preceded by CR becomes CRLF (a CRLF split
 * across chunks counts as preceded). Everything else passes unchanged.
 */
export function toNetworkAscii(): Transform {
  let lastWasCR = false;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      if (chunk.length === 0) return done();
      const out = lfToCrlf(chunk, lastWasCR);
      lastWasCR = chunk[chunk.length - 1] === CR;
      done(null, out);
    },
  });
}

/** The positions of the LFs in chunk that need a CR before them. */
function bareLineFeeds(chunk: Buffer, lastWasCR: boolean): number[] {
  const at: number[] = [];
  for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
    const preceded = i === 0 ? lastWasCR : chunk[i - 1] === CR;
    if (!preceded) at.push(i);
  }
  return at;
}

function lfToCrlf(chunk: Buffer, lastWasCR: boolean): Buffer {
  const at = bareLineFeeds(chunk, lastWasCR);
  if (at.length === 0) return chunk;
  const out = Buffer.allocUnsafe(chunk.length + at.length);
  let from = 0;
  let to = 0;
  for (const lf of at) {
    to += chunk.copy(out, to, from, lf);
    out[to++] = CR;
    from = lf; // the LF itself starts the next run
  }
  chunk.copy(out, to, from);
  return out;
}

/** TYPE A on STOR: CRLF becomes LF (also when split across chunks); a lone CR is kept. */
export function fromNetworkAscii(): Transform {
  let pendingCR = false;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      if (chunk.length === 0) return done();
      const held = pendingCR;
      pendingCR = chunk[chunk.length - 1] === CR;
      const out = crlfToLf(chunk, held, pendingCR);
      done(null, out.length > 0 ? out : undefined);
    },
    flush(done: TransformCallback) {
      done(null, pendingCR ? Buffer.from([CR]) : undefined);
    },
  });
}

/**
 * One chunk of CRLF → LF. held: the previous chunk ended in a CR that was not
 * written yet; it is written now unless this chunk starts with LF. hold: this
 * chunk ends in CR; leave it out, the next chunk (or the flush) decides.
 */
function crlfToLf(chunk: Buffer, held: boolean, hold: boolean): Buffer {
  const end = hold ? chunk.length - 1 : chunk.length;
  const restoreCR = held && chunk[0] !== LF;
  let first = chunk.indexOf(CR);
  while (first !== -1 && first < end && chunk[first + 1] !== LF) first = chunk.indexOf(CR, first + 1);
  const nothingDropped = first === -1 || first >= end;
  if (nothingDropped && !restoreCR) return end === chunk.length ? chunk : chunk.subarray(0, end);
  const out = Buffer.allocUnsafe(end + 1);
  let to = 0;
  if (restoreCR) out[to++] = CR;
  let from = 0;
  // Each CR followed by LF is dropped: copy up to it, continue from the LF.
  for (let cr = first; cr !== -1 && cr < end; cr = chunk.indexOf(CR, cr + 1)) {
    if (chunk[cr + 1] !== LF) continue;
    to += chunk.copy(out, to, from, cr);
    from = cr + 1;
  }
  if (from < end) to += chunk.copy(out, to, from, end);
  return out.subarray(0, to);
}
