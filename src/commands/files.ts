import { isDirectoryRenameAllowed } from '../auth/permissions.js';
import { ftpTime } from '../listing.js';
import { quotePath, Reply } from '../replies.js';
import type { Session } from '../session/session.js';
import { StorageError } from '../storage/types.js';

export async function mkd(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  await s.storage.mkdir(target.storage, s.signal);
  s.reply(Reply.PathCreated, `${quotePath(target.ftp)} created.`);
}

export async function rmd(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  if (target.ftp === '/') throw new StorageError('Denied', 'cannot remove the root');
  await s.storage.rmdir(target.storage, s.signal);
  s.reply(Reply.FileActionOkay, 'Remove directory operation successful.');
}

export async function dele(s: Session, arg: string): Promise<void> {
  await s.storage.delete(s.resolve(arg).storage, s.signal);
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
  s.renameFrom = undefined;
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

export async function mdtm(s: Session, arg: string): Promise<void> {
  const info = await s.storage.stat(s.resolve(arg).storage, s.signal);
  if (info.isDirectory) throw new StorageError('IsADirectory', 'not a plain file');
  s.reply(Reply.FileStatus, ftpTime(info.mtime));
}
