import { createHash } from 'node:crypto';
import type { FileInfo, StoragePath } from './storage/types.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIX_MONTHS_MS = 182 * 24 * 3600 * 1000;

/** A name that would break a line-based listing (a CR or LF put there by another S3 writer). */
export function unlistable(name: string): boolean {
  return /[\r\n]/.test(name);
}

/** One `ls -l` line, as vsftpd writes it (owner and group hidden as ftp), without the line end. */
export function formatListLine(info: FileInfo, now = Date.now()): string {
  const mode = info.isDirectory ? 'drwxr-xr-x' : '-rw-r--r--';
  const size = String(info.size).padStart(12);
  return `${mode} 1 ftp ftp ${size} ${lsDate(info.mtime, now)} ${info.name}`;
}

function lsDate(date: Date, now: number): string {
  const month = MONTHS[date.getUTCMonth()];
  const day = String(date.getUTCDate()).padStart(2);
  const recent = Math.abs(now - date.getTime()) < SIX_MONTHS_MS;
  if (!recent) return `${month} ${day}  ${date.getUTCFullYear()}`;
  const hh = String(date.getUTCHours()).padStart(2, '0');
  const mm = String(date.getUTCMinutes()).padStart(2, '0');
  return `${month} ${day} ${hh}:${mm}`;
}

/** RFC 3659 facts for one entry, limited to the selected ones, e.g. `type=file;size=3;`. */
export function formatFacts(info: FileInfo, path: StoragePath, facts: ReadonlySet<string>): string {
  const out: string[] = [];
  if (facts.has('type')) out.push(`type=${info.isDirectory ? 'dir' : 'file'}`);
  if (facts.has('size') && !info.isDirectory) out.push(`size=${info.size}`);
  if (facts.has('modify')) out.push(`modify=${ftpTime(info.mtime)}`);
  if (facts.has('perm')) out.push(`perm=${info.isDirectory ? 'flcdmpe' : 'adfrw'}`);
  if (facts.has('unique')) out.push(`unique=${createHash('sha1').update(path).digest('hex').slice(0, 16)}`);
  return out.map((f) => `${f};`).join('');
}

/** The facts MLST/MLSD can report, as FEAT lists them. */
export const ALL_FACTS = ['type', 'size', 'modify', 'perm', 'unique'] as const;

/** RFC 3659 time-val: YYYYMMDDHHMMSS in UTC. */
export function ftpTime(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/**
 * Parses an RFC 3659 time-val (YYYYMMDDHHMMSS, optionally .fraction) as UTC;
 * undefined for anything else, out-of-range fields included.
 */
export function parseFtpTime(text: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3})\d*)?$/.exec(text);
  if (!m) return undefined;
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const ms = m[7] ? Number(m[7].padEnd(3, '0')) : 0;
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, sec, ms));
  // Date.UTC rolls 32 January into February; a valid time-val round-trips field by field.
  const valid = date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d && date.getUTCHours() === h && date.getUTCMinutes() === mi && date.getUTCSeconds() === sec;
  return valid ? date : undefined;
}
