import type { EventKind } from '../events/types.js';
import { isDirectoryRenameAllowed } from '../auth/permissions.js';
import { ftpTime, parseFtpTime } from '../listing.js';
import { quotePath, Reply } from '../replies.js';
import type { ResolvedPath, Session } from '../session/session.js';
import { StorageError } from '../storage/types.js';

export async function mkd(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  await s.storage.mkdir(target.storage, s.signal);
  emitFileEvent(s, 'mkdir', target);
  s.reply(Reply.PathCreated, `${quotePath(target.ftp)} created.`);
}

export async function rmd(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  if (target.ftp === '/') throw new StorageError('Denied', 'cannot remove the root');
  await s.storage.rmdir(target.storage, s.signal);
  emitFileEvent(s, 'rmdir', target);
  s.reply(Reply.FileActionOkay, 'Remove directory operation successful.');
}

export async function dele(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  await s.storage.delete(target.storage, s.signal);
  emitFileEvent(s, 'delete', target);
  s.reply(Reply.FileActionOkay, 'Delete operation successful.');
}

export async function rnfr(s: Session, arg: string): Promise<void> {
  const source = s.resolve(arg);
  if (source.ftp === '/') throw new StorageError('Denied', 'cannot rename the root');
  await s.storage.stat(source.storage, s.signal);
  s.renameFrom = source;
  s.reply(Reply.PendingFurtherInfo, 'Ready for RNTO.');
}

export async function rnto(s: Session, arg: string): Promise<void> {
  const source = s.renameFrom;
  if (!source) {
    s.reply(Reply.BadSequence, 'RNFR required first.');
    return;
  }
  const target = s.resolve(arg);
  if (target.ftp === '/') throw new StorageError('InvalidName', 'cannot rename onto the root');
  await s.authorizeOverwrite(target);
  // Rules below the source or target matter only when a whole tree moves; stat only then.
  const rules = s.user?.permissions;
  if (rules && !isDirectoryRenameAllowed(rules, source.ftp, target.ftp) && (await s.storage.stat(source.storage, s.signal)).isDirectory) {
    s.log.warn({ event: 'permission-denied', user: s.user?.name, permission: 'rename', path: source.ftp, to: target.ftp });
    throw new StorageError('Denied', 'a stricter rule applies below the directory or its new name');
  }
  await s.storage.rename(source.storage, target.storage, s.signal);
  s.log.info({ event: 'rename', from: source.ftp, to: target.ftp });
  emitFileEvent(s, 'rename', target, source.ftp);
  s.reply(Reply.FileActionOkay, 'Rename successful.');
}

export async function size(s: Session, arg: string): Promise<void> {
  // The stored size in every TYPE, as Pure-FTPd and a default vsftpd answer: ftplib's
  // retrlines() leaves TYPE A on, and scripts call size() after it. (The ASCII
  // size would take reading the whole file.) REST is what TYPE A refuses.
  const info = await s.storage.stat(s.resolve(arg).storage, s.signal);
  if (info.isDirectory) throw new StorageError('IsADirectory', 'not a plain file');
  s.reply(Reply.FileStatus, String(info.size));
}

/**
 * `MDTM <path>` answers the modification time. `MDTM <time> <path>` sets it,
 * as vsftpd (mdtm_write) and rclone use it: a first word that is a whole
 * time-val followed by a path is read that way, so a file literally named
 * "20240101120000 x" must be asked for with MLST. Setting needs write
 * permission, delete permission where the file exists (as overwriting it
 * does), and a storage that can (else 550 from the driver).
 */
export async function mdtm(s: Session, arg: string): Promise<void> {
  const set = splitTimeArg(arg);
  if (set) {
    await setMtime(s, set.time, set.path);
    s.reply(Reply.FileStatus, 'File modification time set.');
    return;
  }
  const info = await s.storage.stat(s.resolve(arg).storage, s.signal);
  if (info.isDirectory) throw new StorageError('IsADirectory', 'not a plain file');
  s.reply(Reply.FileStatus, ftpTime(info.mtime));
}

/** `MFMT <time> <path>` (draft-somers-ftp-mfxx): offered only where the storage can set times. */
export async function mfmt(s: Session, arg: string): Promise<void> {
  const set = splitTimeArg(arg);
  if (!set) {
    s.reply(Reply.SyntaxErrorInArguments, 'MFMT takes YYYYMMDDHHMMSS and a path.');
    return;
  }
  const target = await setMtime(s, set.time, set.path);
  s.reply(Reply.FileStatus, `Modify=${ftpTime(set.time)}; ${target}`);
}

/** The path of an MDTM or MFMT argument: after the time when there is one (see mdtm). */
export function timedPath(arg: string): string {
  return splitTimeArg(arg)?.path ?? arg;
}

/** `<time-val> <path>` split in two, or undefined when the first word is not a valid time-val. */
function splitTimeArg(arg: string): { time: Date; path: string } | undefined {
  // One space separates them (MFMT SP time-val SP pathname): a name may start with spaces of its own.
  const m = /^(\d{14}(?:\.\d+)?) (.+)$/.exec(arg);
  const time = m ? parseFtpTime(m[1]!) : undefined;
  return time && m ? { time, path: m[2]! } : undefined;
}

/** Setting a time changes the file: write permission, and for a file that exists what replacing it takes. */
async function setMtime(s: Session, time: Date, path: string): Promise<string> {
  const target = s.resolve(path);
  s.authorize('write', target);
  await s.authorizeOverwrite(target);
  // A driver without the capability refuses with its reason (S3: no API sets LastModified): 550.
  await s.storage.setModificationTime(target.storage, time, s.signal);
  return target.ftp;
}

/** Queues a file event when EVENTS_KINDS asks for this kind; never waits or throws. */
function emitFileEvent(s: Session, kind: EventKind, target: ResolvedPath, from?: string): void {
  if (!s.server.events?.wants(kind)) return;
  s.server.events.emit({
    kind,
    user: s.user?.name ?? '',
    clientAddress: s.clientAddress,
    path: target.ftp,
    ...(from !== undefined ? { from } : {}),
    ...s.locate(target.storage),
    session: s.id,
  });
}
