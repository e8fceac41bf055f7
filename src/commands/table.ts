import type { Session } from '../session/session.js';
import type { Permission } from '../auth/permissions.js';
import type { StorageCapabilities } from '../storage/types.js';
import * as auth from './auth.js';
import * as files from './files.js';
import * as hash from './hash.js';
import * as info from './info.js';
import * as listing from './listing.js';
import * as navigation from './navigation.js';
import * as security from './security.js';
import * as transfer from './transfer.js';

export type Handler = (session: Session, arg: string) => void | Promise<void>;

export interface CommandSpec {
  /** Absent for verbs we know and deliberately do not implement (502). */
  handler?: Handler;
  needsLogin: boolean;
  arg: 'none' | 'optional' | 'required';
  /** Syntax shown by HELP. */
  help: string;
  /** Answered at once while a transfer runs, instead of waiting behind it. */
  duringTransfer?: boolean;
  /**
   * Sets up the next transfer (its data connection, its type): done, it
   * leaves a pending REST for that transfer, as vsftpd does (node-ftp sends
   * REST before PASV). Any other command drops it.
   */
  keepsRest?: true;
  /** Offered (HELP) and run only when the storage has this capability; else 502. */
  capability?: keyof StorageCapabilities;
  /** Checked by the preflight on the argument's path (the working directory without one); else 550. */
  perm?: Permission;
  /** The argument is a secret (a password): the log shows `[redacted]`. */
  secretArg?: true;
  /**
   * The part of the argument that names the path, when not all of it does:
   * ls options (`LIST -la dir`), the time of `MDTM <time> <path>` and `MFMT`;
   * undefined when the command names no path (`STAT` alone). The preflight
   * authorizes that path, and a 550 hides whether it exists.
   */
  pathArg?: (arg: string) => string | undefined;
}

const pre = { needsLogin: false } as const;
const post = { needsLogin: true } as const;

/** Every verb the server knows. The session's preflight reads this before any handler runs. */
export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  // Login and session
  USER: { ...pre, arg: 'required', help: 'USER <name>', handler: auth.user },
  PASS: { ...pre, arg: 'optional', help: 'PASS <password>', handler: auth.pass, secretArg: true },
  QUIT: { ...pre, arg: 'none', help: 'QUIT', handler: auth.quit },
  // FTPS (RFC 4217). Clients send PBSZ and PROT after logging in over TLS.
  AUTH: { ...pre, arg: 'required', help: 'AUTH TLS', handler: security.auth },
  PBSZ: { ...post, arg: 'required', help: 'PBSZ 0', handler: security.pbsz },
  PROT: { ...post, arg: 'required', help: 'PROT P | C', handler: security.prot },
  CCC: { ...post, arg: 'none', help: 'CCC', handler: security.ccc },
  // Information
  SYST: { ...pre, arg: 'none', help: 'SYST', handler: info.syst },
  FEAT: { ...pre, arg: 'none', help: 'FEAT', handler: info.feat },
  HELP: { ...pre, arg: 'optional', help: 'HELP [<command>]', handler: info.help },
  NOOP: { ...pre, arg: 'none', help: 'NOOP', handler: info.noop },
  // Before login too: Windows Explorer and ftp.exe send OPTS UTF8 ON before USER (as vsftpd allows).
  OPTS: { ...pre, arg: 'required', help: 'OPTS UTF8 ON | OPTS MLST <facts> | OPTS HASH <algorithm>', handler: info.opts },
  STAT: { ...post, arg: 'optional', help: 'STAT [<path>]', handler: info.stat, duringTransfer: true, perm: 'list', pathArg: (arg) => (arg.trim() === '' ? undefined : listing.stripListOptions(arg)) },
  ALLO: { ...post, arg: 'optional', help: 'ALLO <size>', handler: info.allo },
  // Navigation
  PWD: { ...post, arg: 'none', help: 'PWD', handler: navigation.pwd },
  XPWD: { ...post, arg: 'none', help: 'XPWD', handler: navigation.pwd },
  CWD: { ...post, arg: 'required', help: 'CWD <path>', handler: navigation.cwd },
  XCWD: { ...post, arg: 'required', help: 'XCWD <path>', handler: navigation.cwd },
  CDUP: { ...post, arg: 'none', help: 'CDUP', handler: navigation.cdup },
  XCUP: { ...post, arg: 'none', help: 'XCUP', handler: navigation.cdup },
  // Listings
  LIST: { ...post, arg: 'optional', help: 'LIST [<path>]', handler: listing.list, perm: 'list', pathArg: listing.stripListOptions },
  NLST: { ...post, arg: 'optional', help: 'NLST [<path>]', handler: listing.nlst, perm: 'list', pathArg: listing.stripListOptions },
  MLSD: { ...post, arg: 'optional', help: 'MLSD [<path>]', handler: listing.mlsd, perm: 'list' },
  MLST: { ...post, arg: 'optional', help: 'MLST [<path>]', handler: listing.mlst, perm: 'list' },
  // Directories and files
  MKD: { ...post, arg: 'required', help: 'MKD <path>', handler: files.mkd, perm: 'mkdir' },
  XMKD: { ...post, arg: 'required', help: 'XMKD <path>', handler: files.mkd, perm: 'mkdir' },
  RMD: { ...post, arg: 'required', help: 'RMD <path>', handler: files.rmd, perm: 'rmdir' },
  XRMD: { ...post, arg: 'required', help: 'XRMD <path>', handler: files.rmd, perm: 'rmdir' },
  DELE: { ...post, arg: 'required', help: 'DELE <path>', handler: files.dele, perm: 'delete' },
  RNFR: { ...post, arg: 'required', help: 'RNFR <path>', handler: files.rnfr, perm: 'rename' },
  RNTO: { ...post, arg: 'required', help: 'RNTO <path>', handler: files.rnto, perm: 'rename' },
  SIZE: { ...post, arg: 'required', help: 'SIZE <path>', handler: files.size, perm: 'list' },
  MDTM: { ...post, arg: 'required', help: 'MDTM [<YYYYMMDDHHMMSS>] <path>', handler: files.mdtm, perm: 'list', pathArg: files.timedPath },
  // The argument starts with a time, so the handler checks write on the path behind it.
  MFMT: { ...post, arg: 'required', help: 'MFMT <YYYYMMDDHHMMSS> <path>', handler: files.mfmt, capability: 'setModificationTime', pathArg: files.timedPath },
  // Transfers
  RETR: { ...post, arg: 'required', help: 'RETR <path>', handler: transfer.retr, perm: 'read' },
  HASH: { ...post, arg: 'required', help: 'HASH <path>', handler: hash.hash, perm: 'read' },
  STOR: { ...post, arg: 'required', help: 'STOR <path>', handler: transfer.stor, perm: 'write' },
  APPE: { ...post, arg: 'required', help: 'APPE <path>', handler: transfer.appe, capability: 'resumeUpload', perm: 'append' },
  REST: { ...post, arg: 'required', help: 'REST <offset>', handler: transfer.rest },
  ABOR: { ...post, arg: 'none', help: 'ABOR', handler: transfer.abor, duringTransfer: true },
  TYPE: { ...post, keepsRest: true, arg: 'required', help: 'TYPE A | I', handler: transfer.type },
  MODE: { ...post, arg: 'required', help: 'MODE S', handler: transfer.mode },
  STRU: { ...post, arg: 'required', help: 'STRU F', handler: transfer.stru },
  PASV: { ...post, keepsRest: true, arg: 'none', help: 'PASV', handler: transfer.pasv },
  EPSV: { ...post, keepsRest: true, arg: 'optional', help: 'EPSV [1 | ALL]', handler: transfer.epsv },
  PORT: { ...post, keepsRest: true, arg: 'required', help: 'PORT h1,h2,h3,h4,p1,p2', handler: transfer.port },
  EPRT: { ...post, keepsRest: true, arg: 'required', help: 'EPRT |1|address|port|', handler: transfer.eprt },
  // Known, deliberately not implemented: 502.
  ACCT: { ...post, arg: 'optional', help: 'ACCT', secretArg: true },
  SMNT: { ...post, arg: 'optional', help: 'SMNT' },
  REIN: { ...post, arg: 'optional', help: 'REIN' },
  STOU: { ...post, arg: 'optional', help: 'STOU' },
  SITE: { ...post, arg: 'optional', help: 'SITE' },
  LPRT: { ...post, arg: 'optional', help: 'LPRT' },
  LPSV: { ...post, arg: 'optional', help: 'LPSV' },
  ADAT: { ...post, arg: 'optional', help: 'ADAT' },
  MIC: { ...post, arg: 'optional', help: 'MIC' },
  CONF: { ...post, arg: 'optional', help: 'CONF' },
  ENC: { ...post, arg: 'optional', help: 'ENC' },
  MFF: { ...post, arg: 'optional', help: 'MFF' },
};
