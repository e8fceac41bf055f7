import { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { sendStream } from '../data/streams.js';
import { startTransfer } from '../session/transfer.js';
import { encodeLegacy } from '../encoding.js';
import { formatFacts, formatListLine, splitGlob, unlistable } from '../listing.js';
import { Reply } from '../replies.js';
import type { Permission } from '../auth/permissions.js';
import type { ResolvedPath, Session } from '../session/session.js';
import { joinPath, StorageError, type FileInfo } from '../storage/types.js';
import { dataReady } from './transfer.js';

type Format = (info: FileInfo, dir: ResolvedPath) => string;

/** Entries matched against a pattern between two turns of the event loop. */
const FILTERED_SLICE = 64;

/**
 * The glob in a LIST or NLST argument's last component (`LIST *.txt`), as
 * vsftpd takes it: only if no file or directory has that very name
 * (`dir[1]`, `photos [2019]`), which is then listed as itself.
 */
async function globOf(s: Session, path: string): Promise<ReturnType<typeof splitGlob>> {
  const glob = splitGlob(path);
  if (!glob) return undefined;
  const literal = await s.exists(s.resolve(path)).catch(() => false);
  return literal ? undefined : glob;
}

export async function list(s: Session, arg: string): Promise<void> {
  const path = stripListOptions(arg);
  const glob = await globOf(s, path);
  if (glob) await sendListing(s, glob.dir, (info) => formatListLine(info), { filter: glob.match });
  else await sendListing(s, path, (info) => formatListLine(info));
}

/**
 * NLST answers names; with a glob they carry the directory as the client
 * wrote it (`NLST sub/*.txt` gives `sub/a.txt`), since mget and mdelete
 * RETR and DELE each line as it comes.
 */
export async function nlst(s: Session, arg: string): Promise<void> {
  const path = stripListOptions(arg);
  const glob = await globOf(s, path);
  // Names only: no request is spent on directory dates.
  if (!glob) {
    await sendListing(s, path, (info) => info.name, { dates: false });
    return;
  }
  const prefix = glob.dir === '' ? '' : glob.dir.endsWith('/') ? glob.dir : `${glob.dir}/`;
  await sendListing(s, glob.dir, (info) => `${prefix}${info.name}`, { filter: glob.match, dates: false });
}

export async function mlsd(s: Session, arg: string): Promise<void> {
  await sendListing(
    s,
    arg,
    (info, dir) => {
      const entry = { ftp: dir.ftp === '/' ? `/${info.name}` : `${dir.ftp}/${info.name}`, storage: joinPath(dir.storage, info.name) };
      return `${formatFacts(info, entry.storage, s.mlstFacts, mayAt(s, entry, info))} ${info.name}`;
    },
    { dirOnly: true },
  );
}

export async function mlst(s: Session, arg: string): Promise<void> {
  const target = s.resolve(arg.trim() === '' ? '.' : arg);
  const info = await s.storage.stat(target.storage, s.signal);
  s.reply(Reply.FileActionOkay, [
    `Listing ${target.ftp}`,
    `${formatFacts(info, target.storage, s.mlstFacts, mayAt(s, target, info))} ${target.ftp}`,
    'End',
  ]);
}

/**
 * What the user may do at an entry, for the perm fact: what the command would
 * allow, not just the rule. A STOR onto an existing file replaces it (delete
 * too) unless a drop box stores beside it; mount points and the directories
 * above them are never removed or renamed.
 */
function mayAt(s: Session, entry: ResolvedPath, info: FileInfo): (permission: Permission) => boolean {
  const fixed = info.isDirectory && s.isFixed(entry.storage);
  return (permission) => {
    if (fixed && (permission === 'rename' || permission === 'rmdir')) return false;
    if (!info.isDirectory && permission === 'write' && !s.mayReplace(entry.ftp) && s.user?.dropBoxOnExisting !== 'rename') return false;
    return s.may(permission, entry.ftp);
  };
}

/**
 * Streams a directory listing page by page: the first page is fetched before
 * the 150 reply (so a missing directory answers 550), and every later page is
 * written to the data connection as it arrives. A file argument lists that one
 * file, except for MLSD, which RFC 3659 reserves for directories, and a glob,
 * whose directory part must be one. With `filter`, only the names it passes
 * are sent (none is 150 then 226 with nothing, as vsftpd answers).
 */
async function sendListing(
  s: Session,
  arg: string,
  format: Format,
  { dirOnly = false, filter, dates = true }: { dirOnly?: boolean; filter?: (name: string) => boolean; dates?: boolean } = {},
): Promise<void> {
  dirOnly ||= filter !== undefined;
  if (!dataReady(s)) return;
  const dir = s.resolve(arg.trim() === '' ? '.' : arg);
  let pages: AsyncIterator<FileInfo[]>;
  let first: IteratorResult<FileInfo[]>;
  try {
    pages = s.storage.list(dir.storage, s.signal, { directoryTimes: dates })[Symbol.asyncIterator]();
    first = await pages.next();
  } catch (err) {
    if (dirOnly || !(err instanceof StorageError && err.code === 'NotADirectory')) throw err;
    const info = await s.storage.stat(dir.storage, s.signal);
    pages = (async function* () {})();
    // The file as the client named it, spaces included: they are part of the name.
    first = { done: false, value: [{ ...info, name: arg }] };
  }
  // A client in a legacy code page reads names in it (unmappable characters as '?').
  const legacy = s.legacyEncoding;
  // A pattern costs up to its length × the name's per entry: other sessions get a turn between slices of a page.
  const slice = filter ? FILTERED_SLICE : Infinity;
  const lines = async function* (): AsyncGenerator<Buffer> {
    let page = first;
    while (!page.done) {
      for (let at = 0; at < page.value.length; at += slice) {
        const text = page.value
          .slice(at, at + slice)
          .filter((info) => !unlistable(info.name) && (!filter || filter(info.name)))
          .map((info) => `${format(info, dir)}\r\n`)
          .join('');
        if (text) yield legacy ? encodeLegacy(text, legacy) : Buffer.from(text);
        if (filter) await nextTurn();
      }
      page = await pages.next();
    }
  };
  const source = Readable.from(lines());
  source.on('error', () => {}); // surfaced by sendStream, or moot once the transfer is given up
  startTransfer(s, {
    direction: 'list',
    path: dir.ftp,
    opening: 'Here comes the directory listing.',
    run: ({ socket, signal, count }) => sendStream(source, socket, { signal, count }),
    release() {
      source.destroy();
      void pages.return?.();
    },
  });
}

/** `LIST -la dir` is what many clients send; the options are ls's, not part of the path. */
export function stripListOptions(arg: string): string {
  return arg.replace(/^(\s*-[a-zA-Z]+)+\s*/, '');
}
