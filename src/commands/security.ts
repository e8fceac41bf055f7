import { Reply } from '../replies.js';
import { sessionContext } from '../server/tls.js';
import type { Session } from '../session/session.js';

/** AUTH TLS (RFC 4217): the reply goes out in plain text, then the handshake starts. */
export function auth(s: Session, arg: string): void {
  const ftps = s.server.config.ftps;
  if (!ftps) {
    s.reply(Reply.NotImplemented, 'TLS is not configured on this server.');
    return;
  }
  if (s.secure) {
    s.reply(Reply.BadSequence, 'TLS is already active.');
    return;
  }
  const mechanism = arg.trim().toUpperCase();
  if (!['TLS', 'TLS-C', 'SSL'].includes(mechanism)) {
    s.reply(Reply.ParameterNotImplemented, `AUTH ${mechanism} not supported; use AUTH TLS.`);
    return;
  }
  s.reply(Reply.SecurityExchangeOk, 'Proceed with negotiation.');
  s.upgradeToTls(sessionContext(ftps));
}

export function pbsz(s: Session, arg: string): void {
  if (!s.secure) {
    s.reply(Reply.BadSequence, 'PBSZ needs AUTH TLS first.');
    return;
  }
  s.pbsz = true;
  // Stream mode over TLS has no buffer: the only size is 0 (RFC 4217 §8).
  s.reply(Reply.CommandOkay, arg.trim() === '0' ? 'PBSZ=0' : 'PBSZ=0 (only 0 is meaningful with TLS).');
}

export function prot(s: Session, arg: string): void {
  if (!s.secure || !s.pbsz) {
    s.reply(Reply.BadSequence, 'PROT needs AUTH TLS and PBSZ first.');
    return;
  }
  const level = arg.trim().toUpperCase();
  if (level === 'P' || level === 'C') {
    if (level === 'C' && s.server.config.ftps?.requireProtP && s.user?.requireProtP !== false) {
      s.reply(Reply.PolicyDenied, 'Data connections must be encrypted: use PROT P.');
      return;
    }
    s.protectData = level === 'P';
    s.reply(Reply.CommandOkay, `Protection level set to ${level}.`);
  } else if (level === 'S' || level === 'E') {
    s.reply(Reply.ProtLevelNotSupported, `PROT ${level} not supported; use P or C.`);
  } else {
    s.reply(Reply.SyntaxErrorInArguments, 'PROT takes P or C.');
  }
}

/** Clearing the control channel would let anyone on the path read and rewrite commands. */
export function ccc(s: Session): void {
  s.reply(Reply.PolicyDenied, 'CCC is refused by policy.');
}

/** Whether a login by `user` (or by anyone, before USER names one) must wait for TLS. */
export function tlsRequiredForLogin(s: Session, requireTls: boolean | undefined): boolean {
  const ftps = s.server.config.ftps;
  if (!ftps || s.secure) return false;
  return requireTls ?? ftps.requireTlsLogin;
}

/** Whether transfers need PROT P for this session's user. */
export function protectionRequired(s: Session): boolean {
  const ftps = s.server.config.ftps;
  if (!ftps) return false;
  return s.user?.requireProtP ?? ftps.requireProtP;
}
