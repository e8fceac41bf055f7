import { createHash } from 'node:crypto';
import type { Permission } from './auth/permissions.js';
import type { FileInfo, StoragePath } from './storage/types.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIX_MONTHS_MS = 182 * 24 * 3600 * 1000;
/** A date this far ahead still shows its time: the storage's clock may run a little ahead of ours. */
const CLOCK_SKEW_MS = 3600 * 1000;

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
  // The year for a date over six months old, and for one in the future (vsftpd and ls show it for any
  // future date; an hour of clock skew is let through), which a client would otherwise read as last year's.
  const age = now - date.getTime();
  const recent = age < SIX_MONTHS_MS && age > -CLOCK_SKEW_MS;
  if (!recent) return `${month} ${day}  ${date.getUTCFullYear()}`;
  const hh = String(date.getUTCHours()).padStart(2, '0');
  const mm = String(date.getUTCMinutes()).padStart(2, '0');
  return `${month} ${day} ${hh}:${mm}`;
}

/** RFC 3659 `perm` letters (section 7.5.5) and the permission each stands for; `e` (CWD) needs none. */
const FILE_PERM_LETTERS: ReadonlyArray<[string, Permission]> = [['a', 'append'], ['d', 'delete'], ['f', 'rename'], ['r', 'read'], ['w', 'write']];
const DIR_PERM_LETTERS: ReadonlyArray<[string, Permission]> = [['f', 'rename'], ['l', 'list'], ['c', 'write'], ['d', 'rmdir'], ['m', 'mkdir'], ['p', 'delete']];

/**
 * RFC 3659 facts for one entry, limited to the selected ones, e.g. `type=file;size=3;`.
 * `may` says what the user may do at the entry, for `perm`.
 */
export function formatFacts(info: FileInfo, path: StoragePath, facts: ReadonlySet<string>, may: (permission: Permission) => boolean): string {
  const out: string[] = [];
  if (facts.has('type')) out.push(`type=${info.isDirectory ? 'dir' : 'file'}`);
  if (facts.has('size') && !info.isDirectory) out.push(`size=${info.size}`);
  if (facts.has('modify')) out.push(`modify=${ftpTime(info.mtime)}`);
  if (facts.has('perm')) {
    const letters = (info.isDirectory ? DIR_PERM_LETTERS : FILE_PERM_LETTERS).filter(([, permission]) => may(permission)).map(([letter]) => letter);
    out.push(`perm=${letters.join('')}${info.isDirectory ? 'e' : ''}`);
  }
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

/** Characters that make a path's last component a pattern in LIST and NLST. */
const GLOB_CHARS = /[*?[]/;

/** A set's members are code-point ranges, sorted and disjoint: a lookup is a binary search, however long the set is written. */
type GlobToken = { kind: 'star' } | { kind: 'one' } | { kind: 'char'; ch: string } | { kind: 'set'; negate: boolean; ranges: Array<[number, number]> };

/**
 * Splits a LIST/NLST argument whose last component is a glob (`*`, `?`,
 * `[...]`, as vsftpd takes them) into the directory as the client wrote it
 * and a matcher; undefined when there is no pattern. Only the last component
 * may be one: in `a*` followed by `/b`, the star is literal.
 */
export function splitGlob(arg: string): { dir: string; match: (name: string) => boolean } | undefined {
  const slash = arg.lastIndexOf('/');
  const last = arg.slice(slash + 1);
  if (!GLOB_CHARS.test(last)) return undefined;
  const dir = slash < 0 ? '' : slash === 0 ? '/' : arg.slice(0, slash);
  return { dir, match: globMatcher(last) };
}

/**
 * A matcher for one glob component. Like a shell, a leading '.' is matched
 * only by a pattern that starts with one (so `mdelete *` spares dot files).
 * Matching is iterative with one backtrack point: linear in pattern × name,
 * whatever the pattern (no regular expression, so no catastrophic backtracking).
 */
export function globMatcher(pattern: string): (name: string) => boolean {
  const tokens = parseGlob(Array.from(pattern));
  const dotExplicit = pattern.startsWith('.');
  return (name) => {
    if (name.startsWith('.') && !dotExplicit) return false;
    return matchTokens(tokens, Array.from(name));
  };
}

function parseGlob(chars: string[]): GlobToken[] {
  const tokens: GlobToken[] = [];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === '*') {
      if (tokens.at(-1)?.kind !== 'star') tokens.push({ kind: 'star' });
    } else if (ch === '?') {
      tokens.push({ kind: 'one' });
    } else if (ch === '[') {
      // A set runs to the first ']' after its first member; without one, '[' is literal.
      let j = i + 1;
      const negate = chars[j] === '!' || chars[j] === '^';
      if (negate) j++;
      const start = j;
      while (j < chars.length && (chars[j] !== ']' || j === start)) j++;
      if (j >= chars.length) {
        tokens.push({ kind: 'char', ch });
        continue;
      }
      const members = chars.slice(start, j).map((c) => c.codePointAt(0)!);
      const ranges: Array<[number, number]> = [];
      for (let k = 0; k < members.length; k++) {
        const lo = members[k]!;
        if (members[k + 1] === '-'.codePointAt(0) && k + 2 < members.length) {
          ranges.push([lo, members[k + 2]!]);
          k += 2;
        } else {
          ranges.push([lo, lo]);
        }
      }
      tokens.push({ kind: 'set', negate, ranges: disjoint(ranges) });
      i = j;
    } else {
      tokens.push({ kind: 'char', ch });
    }
  }
  return tokens;
}

function matchOne(token: GlobToken, ch: string): boolean {
  switch (token.kind) {
    case 'one':
      return true;
    case 'char':
      return token.ch === ch;
    case 'set':
      return inRanges(token.ranges, ch.codePointAt(0)!) !== token.negate;
    case 'star':
      return false;
  }
}

/** Ranges sorted and merged where they overlap or touch; a reversed one (`[z-a]`) matches nothing, as in a shell. */
function disjoint(ranges: Array<[number, number]>): Array<[number, number]> {
  const merged: Array<[number, number]> = [];
  for (const [lo, hi] of ranges.filter(([lo, hi]) => lo <= hi).sort((x, y) => x[0] - y[0])) {
    const last = merged.at(-1);
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else merged.push([lo, hi]);
  }
  return merged;
}

function inRanges(ranges: ReadonlyArray<[number, number]>, cp: number): boolean {
  let low = 0;
  let high = ranges.length - 1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    const [lo, hi] = ranges[mid]!;
    if (cp < lo) high = mid - 1;
    else if (cp > hi) low = mid + 1;
    else return true;
  }
  return false;
}

function matchTokens(tokens: GlobToken[], name: string[]): boolean {
  let t = 0;
  let n = 0;
  let starT = -1;
  let starN = 0;
  while (n < name.length) {
    const token = tokens[t];
    if (token?.kind === 'star') {
      starT = t++;
      starN = n;
    } else if (token && matchOne(token, name[n]!)) {
      t++;
      n++;
    } else if (starT >= 0) {
      t = starT + 1;
      n = ++starN;
    } else {
      return false;
    }
  }
  while (tokens[t]?.kind === 'star') t++;
  return t === tokens.length;
}
