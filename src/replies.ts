/** FTP reply codes (RFC 959 §4.2, RFC 2228, RFC 2428, RFC 3659), named for what they mean. */
export const Reply = {
  RestartMarker: 110,
  FileStatusOkay: 150,
  CommandOkay: 200,
  NotImplementedSuperfluous: 202,
  SystemStatus: 211,
  DirectoryStatus: 212,
  FileStatus: 213,
  HelpMessage: 214,
  SystemType: 215,
  ServiceReady: 220,
  ClosingControl: 221,
  NoTransferToAbort: 225,
  TransferComplete: 226,
  EnteringPassive: 227,
  EnteringExtendedPassive: 229,
  SecurityExchangeOk: 234,
  LoggedIn: 230,
  FileActionOkay: 250,
  PathCreated: 257,
  NeedPassword: 331,
  PendingFurtherInfo: 350,
  ServiceNotAvailable: 421,
  CantOpenDataConnection: 425,
  TransferAborted: 426,
  FileUnavailableBusy: 450,
  LocalError: 451,
  InsufficientStorage: 452,
  SyntaxError: 500,
  SyntaxErrorInArguments: 501,
  NotImplemented: 502,
  BadSequence: 503,
  ParameterNotImplemented: 504,
  DataProtectionRequired: 521,
  NetworkProtocolNotSupported: 522,
  TlsFailed: 522,
  NotLoggedIn: 530,
  PolicyDenied: 534,
  ProtLevelNotSupported: 536,
  FileUnavailable: 550,
  PageTypeUnknown: 551,
  ExceededStorage: 552,
  FileNameNotAllowed: 553,
  InvalidRestart: 554,
} as const;

export type ReplyCode = (typeof Reply)[keyof typeof Reply];

/**
 * Formats a reply. Text from file names can hold anything a client or another
 * S3 writer put there, so CR and LF are replaced here, the one place replies
 * are built. Multi-line replies follow RFC 959: `123-first`, ` middle`, `123 last`.
 */
export function formatReply(code: ReplyCode, lines: string | readonly string[]): string {
  const text = (typeof lines === 'string' ? [lines] : lines).map(sanitize);
  if (text.length <= 1) return `${code} ${text[0] ?? ''}\r\n`;
  const last = text.length - 1;
  return text
    .map((line, i) => (i === 0 ? `${code}-${line}` : i === last ? `${code} ${line}` : ` ${line}`))
    .join('\r\n')
    .concat('\r\n');
}

function sanitize(line: string): string {
  return line.replace(/[\r\n]/g, ' ');
}

/** Quotes a path for a 257 reply (RFC 959 appendix II: embedded quotes are doubled). */
export function quotePath(path: string): string {
  return `"${path.replace(/"/g, '""')}"`;
}

/** Reply bytes as Telnet text: a 0xFF (a ÿ in Latin-1; never in UTF-8) goes out doubled, as IAC IAC (RFC 3659 §2.2). */
export function telnetText(bytes: Buffer): Buffer {
  let at = bytes.indexOf(0xff);
  if (at < 0) return bytes;
  const parts: Buffer[] = [];
  let from = 0;
  for (; at >= 0; at = bytes.indexOf(0xff, at + 1)) {
    parts.push(bytes.subarray(from, at + 1), IAC_BYTE);
    from = at + 1;
  }
  parts.push(bytes.subarray(from));
  return Buffer.concat(parts);
}

const IAC_BYTE = Buffer.from([0xff]);
