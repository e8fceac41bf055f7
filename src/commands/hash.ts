import { Reply } from '../replies.js';
import type { Session } from '../session/session.js';
import { startWork } from '../session/transfer.js';
import { HASH_ALGORITHMS, type HashAlgorithm } from '../storage/types.js';

/**
 * The HASH command (draft-bryan-ftp-hash): FEAT line, OPTS HASH and HASH itself.
 * SHA-256 is the default because uploads store it: answering it needs no read.
 */
const DEFAULT_ALGORITHM: HashAlgorithm = 'SHA-256';

/** Each session's OPTS HASH choice, kept here so the session needs no field for it. */
const selected = new WeakMap<Session, HashAlgorithm>();

function algorithmOf(s: Session): HashAlgorithm {
  return selected.get(s) ?? DEFAULT_ALGORITHM;
}

/** The FEAT line: every algorithm, the selected one marked with '*'. */
export function featLine(s: Session): string {
  const current = algorithmOf(s);
  return `HASH ${HASH_ALGORITHMS.map((a) => (a === current ? `${a}*` : a)).join(';')}`;
}

/** OPTS HASH [<algorithm>]: selects an algorithm (200 with its name); without one, names the current one. */
export function opts(s: Session, value: string): void {
  const wanted = value.trim().toUpperCase();
  if (wanted === '') {
    s.reply(Reply.CommandOkay, algorithmOf(s));
    return;
  }
  const algorithm = HASH_ALGORITHMS.find((a) => a === wanted);
  if (!algorithm) {
    s.reply(Reply.SyntaxErrorInArguments, `Unknown algorithm, use one of ${HASH_ALGORITHMS.join(', ')}.`);
    return;
  }
  selected.set(s, algorithm);
  s.reply(Reply.CommandOkay, algorithm);
}

/**
 * HASH <path>: `213 <algorithm> <start>-<end> <hex> <path>` over the whole
 * file. Reading a big file takes long, so it runs as a transfer does: ABOR
 * or the client leaving stops it (startWork).
 */
export function hash(s: Session, arg: string): void {
  const target = s.resolve(arg);
  const algorithm = algorithmOf(s);
  startWork(s, 'HASH', arg, target.ftp, async (signal) => {
    const started = performance.now();
    const result = await s.storage.hash(target.storage, algorithm, signal);
    s.log.info({
      event: 'hash',
      path: target.ftp,
      algorithm,
      bytes: result.size,
      stored: result.stored,
      ms: Math.round(performance.now() - started),
    });
    return { code: Reply.FileStatus, text: `${algorithm} 0-${result.size} ${result.hash} ${target.ftp}` };
  });
}
