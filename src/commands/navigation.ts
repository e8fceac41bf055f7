import { quotePath, Reply } from '../replies.js';
import type { Session } from '../session/session.js';
import { StorageError } from '../storage/types.js';

export function pwd(s: Session): void {
  s.reply(Reply.PathCreated, `${quotePath(s.cwd)} is the current directory.`);
}

export async function cwd(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg);
  const info = await s.storage.stat(target.storage, s.signal);
  if (!info.isDirectory) throw new StorageError('NotADirectory', 'not a directory');
  s.cwd = target.ftp;
  s.reply(Reply.FileActionOkay, 'Directory successfully changed.');
}

export async function cdup(s: Session): Promise<void> {
  await cwd(s, '..');
}
