import type { LegacyEncoding } from '../encoding.js';
import { ALL_FACTS, formatListLine, unlistable } from '../listing.js';
import { Reply } from '../replies.js';
import type { Session } from '../session/session.js';
import { StorageError } from '../storage/types.js';
import * as hash from './hash.js';
import { stripListOptions } from './listing.js';
import { COMMANDS } from './table.js';

/**
 * STAT of a path answers over the control connection, in one reply that a
 * client need not read: past this many bytes of entries it stops, so a
 * session holds no more unread reply than the session's own bound.
 */
const MAX_STAT_BYTES = 64 * 1024;

export function syst(s: Session): void {
  s.reply(Reply.SystemType, 'UNIX Type: L8');
}

export function noop(s: Session): void {
  s.reply(Reply.CommandOkay, 'NOOP ok.');
}

export function allo(s: Session): void {
  s.reply(Reply.NotImplementedSuperfluous, 'ALLO is superfluous here.');
}

export function feat(s: Session): void {
  const lines = [
    'Features:',
    ...(s.server.config.ftps ? ['AUTH TLS', 'PBSZ', 'PROT'] : []),
    'EPRT',
    'EPSV',
    hash.featLine(s),
    'MDTM',
    ...(s.storage.capabilities.setModificationTime ? ['MFMT'] : []),
    `MLST ${ALL_FACTS.map((f) => `${f}${s.mlstFacts.has(f) ? '*' : ''};`).join('')}`,
    'PASV',
    'REST STREAM',
    'SIZE',
    'TVFS',
    'UTF8',
    'End',
  ];
  s.reply(Reply.SystemStatus, lines);
}

export function help(s: Session, arg: string): void {
  const verb = arg.trim().toUpperCase();
  if (verb) {
    const spec = COMMANDS[verb];
    if (!spec) s.reply(Reply.SyntaxErrorInArguments, `Unknown command ${verb}.`);
    else if (!spec.handler) s.reply(Reply.HelpMessage, `${verb} is not implemented.`);
    else s.reply(Reply.HelpMessage, `Syntax: ${spec.help}`);
    return;
  }
  const verbs = Object.entries(COMMANDS)
    .filter(([, spec]) => spec.handler && (!spec.capability || s.storage.capabilities[spec.capability]))
    .map(([verb]) => verb.padEnd(5));
  const rows: string[] = [];
  for (let i = 0; i < verbs.length; i += 10) rows.push(verbs.slice(i, i + 10).join(' ').trimEnd());
  s.reply(Reply.HelpMessage, ['The following commands are recognized.', ...rows, 'Help OK.']);
}

export function opts(s: Session, arg: string): void {
  const [name = '', ...rest] = arg.trim().split(/\s+/);
  const value = rest.join(' ');
  switch (name.toUpperCase()) {
    case 'UTF8':
    case 'UTF-8':
      if (!/^(ON|OFF)?$/i.test(value)) {
        s.reply(Reply.SyntaxErrorInArguments, 'OPTS UTF8 takes ON or OFF.');
      } else if (!s.server.config.legacyEncoding) {
        // Names are always UTF-8 (RFC 2640); OFF is accepted and changes nothing, as in vsftpd.
        s.reply(Reply.CommandOkay, 'Always in UTF8 mode.');
      } else {
        // With FTP_LEGACY_ENCODING, a client that says UTF-8 gets UTF-8 both ways from now on.
        s.legacyEncoding = /^OFF$/i.test(value) ? s.server.config.legacyEncoding : undefined;
        s.reply(Reply.CommandOkay, s.legacyEncoding ? `UTF8 mode off: names in ${s.legacyEncoding}.` : 'UTF8 mode on.');
      }
      return;
    case 'HASH':
      hash.opts(s, value);
      return;
    case 'MLST': {
      const wanted = value
        .split(';')
        .map((f) => f.trim().toLowerCase())
        .filter((f): f is (typeof ALL_FACTS)[number] => (ALL_FACTS as readonly string[]).includes(f));
      s.mlstFacts = new Set(wanted);
      s.reply(Reply.CommandOkay, `MLST OPTS ${wanted.map((f) => `${f};`).join('')}`);
      return;
    }
    default:
      s.reply(Reply.SyntaxErrorInArguments, `Option ${name} not understood.`);
  }
}

export async function stat(s: Session, arg: string): Promise<void> {
  const transfer = s.transfer;
  if (transfer) {
    const of = transfer.total !== undefined ? ` of ${transfer.total}` : '';
    s.reply(Reply.FileStatus, `Status: ${transfer.direction} of ${transfer.path}: ${transfer.bytes}${of} bytes transferred.`);
    return;
  }
  if (arg.trim() === '') {
    // Nothing about the storage behind the server (bucket, prefix, endpoint, directory): any logged-in user may ask.
    s.reply(Reply.SystemStatus, [
      's3ftp status:',
      `Connected from ${s.clientAddress}`,
      `Logged in as ${s.user?.name ?? '(nobody)'}`,
      `TYPE: ${s.type === 'A' ? 'ASCII' : 'BINARY'}, MODE: Stream, STRU: File`,
      `Session timeout in seconds is ${s.server.config.idleTimeoutMs / 1000}`,
      `Data connection: ${s.data ? s.data.mode : 'none'}`,
      'End of status',
    ]);
    return;
  }
  const target = s.resolve(stripListOptions(arg));
  const lines = [`Status of ${target.ftp}:`];
  let bytes = 0;
  try {
    listing: for await (const page of s.storage.list(target.storage, s.signal)) {
      for (const info of page) {
        if (unlistable(info.name)) continue;
        const line = formatListLine(info);
        bytes += Buffer.byteLength(line) + 2;
        if (bytes > MAX_STAT_BYTES) {
          lines.push(`(listing stops at ${MAX_STAT_BYTES / 1024} KiB; use LIST)`);
          break listing;
        }
        lines.push(line);
      }
    }
  } catch (err) {
    if (!(err instanceof StorageError && err.code === 'NotADirectory')) throw err;
    lines.push(formatListLine(await s.storage.stat(target.storage, s.signal)));
  }
  lines.push('End of status');
  s.reply(Reply.FileStatus, lines);
}
