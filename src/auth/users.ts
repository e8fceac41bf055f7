import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { Slots } from '../slots.js';
import { parseSecretJson } from '../config/json.js';
import { BUCKET_NAME, homeToStoragePath, resolveFtpPath } from '../paths.js';
import { parsePermissions, type PermissionRules } from './permissions.js';
import type { StorageTarget } from '../storage/storages.js';
import type { StoragePath } from '../storage/types.js';

/**
 * A user name as users are told apart: case-folded. Two names that differ
 * only in case would share one session count (maxSessions) and could stand
 * for one account at a provider that ignores case, so a users file may not
 * hold both, and the identity provider is never asked for a case variant of
 * a local name.
 */
export function nameKey(name: string): string {
  return name.toLowerCase();
}

/** A stored password: an scrypt hash from the users file, or a plain one from FTP_PASSWORD. */
export type PasswordSecret =
  | { kind: 'scrypt'; N: number; r: number; p: number; salt: Buffer; hash: Buffer }
  | { kind: 'plain'; value: string };

export interface User {
  name: string;
  password: PasswordSecret;
  /**
   * The directory that is this user's '/': in the server's storage, or in
   * `homeBucket`. Undefined when '/' holds nothing but the user's mounts.
   */
  home?: StoragePath;
  /** The bucket of an `s3://bucket/prefix` home; undefined: the server's storage. */
  homeBucket?: string;
  /** Logical directories shown from elsewhere: `/outgoing` → s3://exports/partner-a. */
  mounts?: ReadonlyArray<{ dir: string; target: StorageTarget }>;
  /** What the user may do where; full access when absent. */
  permissions?: PermissionRules;
  /** Per-user overrides of the FTPS requirements (FTPS_REQUIRE_TLS, FTPS_REQUIRE_PROT_P). */
  requireTls?: boolean;
  requireProtP?: boolean;
  /**
   * An interrupted upload publishes what was received (so REST + STOR can resume it)
   * instead of leaving the previous file untouched. Default false.
   */
  keepPartialUploads?: boolean;
  /**
   * An upload onto a name that exists, by a user who may not replace it (a
   * drop box): 'refuse' (550; it tells that the name exists) or 'rename'
   * (stored under a free name, `report (1).csv`, said in the 226). Default 'refuse'.
   */
  dropBoxOnExisting?: 'refuse' | 'rename';
  /** Largest file this user may upload, in bytes: a STOR past it is cut off with 552 and stores nothing. */
  maxFileSize?: number;
  /** How many sessions this user may have logged in at once; the next login gets 530. */
  maxSessions?: number;
  /** Per-transfer bandwidth caps in KiB/s, below the server's own (FTP_UPLOAD_KIBPS, FTP_DOWNLOAD_KIBPS). */
  uploadKiBps?: number;
  downloadKiBps?: number;
}

const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 };
const KEY_LENGTH = 32;
export const MAX_USER_BYTES = 128;
export const MAX_PASSWORD_BYTES = 1024;

/**
 * Password checks (scrypt) run on libuv's thread pool, where a check cannot be
 * cancelled and the process waits at exit for every one queued. At most this
 * many run at once, the rest wait here: a flood of logins leaves the pool's
 * other threads to file I/O, and a shutdown waits for these alone.
 */
const scryptSlots = new Slots(2);

function scryptAsync(
  password: string,
  salt: Buffer,
  keylen: number,
  options: ScryptOptions,
  signal?: AbortSignal,
  moot?: () => boolean,
): Promise<Buffer> {
  return scryptSlots.run(
    () =>
      new Promise<Buffer>((resolve, reject) => {
        if (moot?.()) reject(new Error('password check no longer needed'));
        else scrypt(password, salt, keylen, { ...options, maxmem: 256 * options.N! * options.r! }, (err, key) => (err ? reject(err) : resolve(key)));
      }),
    signal,
  );
}

/** Hashes a password into the `scrypt$N$r$p$salt$hash` form the users file takes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const { N, r, p } = SCRYPT_DEFAULTS;
  const hash = await scryptAsync(password, salt, KEY_LENGTH, { N, r, p });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** Parses a hash made by hashPassword; throws on anything else. */
export function parsePasswordHash(text: string): PasswordSecret {
  const parts = text.split('$');
  const [kind, n, r, p, salt, hash] = parts;
  if (parts.length !== 6 || kind !== 'scrypt' || !salt || !hash) {
    throw new Error('password hash must look like scrypt$N$r$p$salt$hash (see "npm run hash-password")');
  }
  const params = [n, r, p].map(Number);
  if (!params.every((x) => Number.isInteger(x) && x > 0) || (params[0]! & (params[0]! - 1)) !== 0) {
    throw new Error('scrypt parameters are not valid');
  }
  return {
    kind: 'scrypt',
    N: params[0]!,
    r: params[1]!,
    p: params[2]!,
    salt: Buffer.from(salt, 'base64'),
    hash: Buffer.from(hash, 'base64'),
  };
}

/**
 * Whether the password matches, compared in constant time. `signal` gives up a
 * check still waiting for its turn (it rejects then); so does `moot`, asked
 * when the turn comes: a check whose answer no longer matters (its address
 * was locked out meanwhile) is not run.
 */
export async function verifyPassword(secret: PasswordSecret, password: string, signal?: AbortSignal, moot?: () => boolean): Promise<boolean> {
  if (secret.kind === 'plain') {
    // Digests of equal length, so neither an early exit nor the comparison's time depends on the password's length.
    const a = createHash('sha256').update(secret.value).digest();
    const b = createHash('sha256').update(password).digest();
    return timingSafeEqual(a, b);
  }
  const candidate = await scryptAsync(password, secret.salt, secret.hash.length, { N: secret.N, r: secret.r, p: secret.p }, signal, moot);
  return timingSafeEqual(candidate, secret.hash);
}

/** The keys a users file and each of its entries may hold; any other is an error, never ignored. */
const FILE_KEYS = ['users'] as const;
/** What a user entry may say besides name, password and home: in the users file and from the identity provider alike. */
export const USER_SETTINGS = [
  'mounts',
  'permissions',
  'requireTls',
  'requireProtP',
  'keepPartialUploads',
  'dropBoxOnExisting',
  'maxFileSize',
  'maxSessions',
  'uploadKiBps',
  'downloadKiBps',
] as const;
/** Bounds of the numeric settings: at least 1, at most these. */
const NUMBER_SETTINGS = {
  maxFileSize: 5 * 1024 ** 4,
  maxSessions: 100_000,
  uploadKiBps: 10 * 1024 * 1024,
  downloadKiBps: 10 * 1024 * 1024,
} as const;
const USER_KEYS = ['name', 'password', 'home', ...USER_SETTINGS] as const;

/** Validates a user entry's settings (USER_SETTINGS); throws an Error naming the field. */
export function parseUserSettings(e: Record<string, unknown>): Pick<User, (typeof USER_SETTINGS)[number]> {
  let permissions: PermissionRules;
  try {
    permissions = parsePermissions(e.permissions);
  } catch (err) {
    throw new Error(`permissions: ${(err as Error).message}`);
  }
  for (const flag of ['requireTls', 'requireProtP', 'keepPartialUploads'] as const) {
    if (e[flag] !== undefined && typeof e[flag] !== 'boolean') throw new Error(`${flag} must be true or false`);
  }
  if (e.dropBoxOnExisting !== undefined && e.dropBoxOnExisting !== 'refuse' && e.dropBoxOnExisting !== 'rename') {
    throw new Error('dropBoxOnExisting must be "refuse" or "rename"');
  }
  for (const [key, max] of Object.entries(NUMBER_SETTINGS)) {
    const v = e[key];
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= max)) {
      throw new Error(`${key} must be a whole number from 1 to ${max}`);
    }
  }
  if (e.maxFileSize !== undefined && e.keepPartialUploads === true) {
    // A cut-off upload would publish its first maxFileSize bytes as if they were the file.
    throw new Error('maxFileSize and keepPartialUploads do not combine: an upload cut off at the limit must store nothing');
  }
  return {
    mounts: parseMounts(e.mounts),
    maxFileSize: e.maxFileSize as number | undefined,
    maxSessions: e.maxSessions as number | undefined,
    uploadKiBps: e.uploadKiBps as number | undefined,
    downloadKiBps: e.downloadKiBps as number | undefined,
    permissions,
    requireTls: e.requireTls as boolean | undefined,
    requireProtP: e.requireProtP as boolean | undefined,
    keepPartialUploads: e.keepPartialUploads as boolean | undefined,
    dropBoxOnExisting: e.dropBoxOnExisting as User['dropBoxOnExisting'],
  };
}

/**
 * A user's `home` (undefined: '/' is the storage root, or only the mounts
 * when there are some, so forgetting it never hands out the whole storage).
 */
export function parseHome(value: unknown, hasMounts: boolean): Pick<User, 'home' | 'homeBucket'> {
  if (value === undefined) return hasMounts ? {} : { home: '' };
  if (typeof value !== 'string') throw new Error('home must be a path or s3://bucket/prefix');
  const target = parseTarget(value);
  return { home: target.path, homeBucket: target.bucket };
}

/** A directory: a path in the server's storage ('/partners/a'), or `s3://bucket/prefix` in another bucket. */
function parseTarget(text: string): StorageTarget {
  const s3 = /^s3:\/\/([^/]*)(\/.*)?$/.exec(text);
  // `S3://x`, `s3:/x`, `https://…`: a scheme misspelt must not become a path in the server's storage.
  if (!s3 && /^[A-Za-z][A-Za-z0-9+.-]*:/.test(text)) throw new Error(`"${text.slice(0, 80)}": write a bucket as s3://bucket/prefix, a path without a scheme`);
  if (!s3) return { path: homeToStoragePath(text) };
  if (!BUCKET_NAME.test(s3[1]!)) throw new Error(`"${text.slice(0, 80)}": not a valid bucket name`);
  return { bucket: s3[1], path: homeToStoragePath(s3[2] ?? '') };
}

/** `{ "/outgoing": "s3://exports/partner-a", "/shared": "/common" }`: logical directories and where they are. */
function parseMounts(value: unknown): User['mounts'] {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('mounts must map directories to places');
  const entries = Object.entries(value as Record<string, unknown>);
  // `{}` would leave a user with no home and nothing mounted; a home must be asked for, never implied.
  if (entries.length === 0) throw new Error('mounts must name at least one directory (or leave "mounts" out)');
  const seen = new Set<string>();
  return entries.map(([dir, target]) => {
    const at = resolveFtpPath('/', dir);
    if (at === '/') throw new Error('mounts: "/" is the home, set "home" instead');
    if (seen.has(at)) throw new Error(`mounts: "${dir}" names ${at} again`);
    seen.add(at);
    if (typeof target !== 'string') throw new Error(`mounts: "${dir}" must map to a path or s3://bucket/prefix`);
    try {
      return { dir: at, target: parseTarget(target) };
    } catch (err) {
      throw new Error(`mounts: "${dir}": ${(err as Error).message}`);
    }
  });
}

function rejectUnknownKeys(object: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const key of Object.keys(object)) {
    if (known.includes(key)) continue;
    const near = known.find((k) => closeTo(k, key));
    const hint = near ? `did you mean "${near}"?` : `known keys: ${known.join(', ')}`;
    throw new Error(`${where}: unknown key "${key.slice(0, 64)}" (${hint})`);
  }
}

/** A likely misspelling: same letters up to case, a plural, a prefix, or one edit. */
function closeTo(known: string, key: string): boolean {
  const a = known.toLowerCase();
  const b = key.toLowerCase().replace(/[_-]/g, '');
  if (a === b || a.startsWith(b) || b.startsWith(a)) return b.length >= 3;
  if (Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return a.slice(i + 1) === b.slice(i + 1) || a.slice(i + 1) === b.slice(i) || a.slice(i) === b.slice(i + 1);
}

/**
 * Parses a users file: `{ "users": [ { "name", "password": "scrypt$…", "home": "/alice" } ] }`.
 * Returns at least one user; throws with a message that names the entry at fault,
 * also for a key it does not know (a misspelt "permission" must not mean full access).
 */
export function parseUsersFile(text: string): User[] {
  const doc = parseSecretJson(text);
  const list = (doc as { users?: unknown })?.users;
  if (!Array.isArray(list)) throw new Error('expected an object with a "users" array');
  rejectUnknownKeys(doc as Record<string, unknown>, FILE_KEYS, 'the users file');
  // A users file that names nobody is a mistake (an unfilled secret, a wrong file), never a wish
  // for a server with no users: refuse it rather than start with none or a made-up one.
  if (list.length === 0) throw new Error('defines no users: the "users" array is empty');
  const seen = new Set<string>();
  return list.map((entry: unknown, i) => {
    const e = entry as Record<string, unknown>;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new Error(`users[${i}] must be an object`);
    const where = `users[${i}]`;
    // A misspelt key ("permission", "homedir") would silently give the user full access or the root.
    rejectUnknownKeys(e, USER_KEYS, typeof e.name === 'string' ? `${where} (user "${e.name.slice(0, 128)}")` : where);
    if (typeof e?.name !== 'string' || !/^[\w.@-]{1,128}$/.test(e.name)) {
      throw new Error(`${where}.name must be 1-128 letters, digits or ._@-`);
    }
    if (seen.has(nameKey(e.name))) throw new Error(`${where}.name "${e.name}" appears twice (names are told apart regardless of case)`);
    seen.add(nameKey(e.name));
    if (typeof e.password !== 'string') throw new Error(`${where}.password must be a hash string`);
    let password: PasswordSecret;
    try {
      password = parsePasswordHash(e.password);
    } catch (err) {
      throw new Error(`${where}.password: ${(err as Error).message}`);
    }
    let settings: ReturnType<typeof parseUserSettings>;
    try {
      settings = parseUserSettings(e);
    } catch (err) {
      throw new Error(`${where}.${(err as Error).message}`);
    }
    let home: ReturnType<typeof parseHome>;
    try {
      home = parseHome(e.home, settings.mounts !== undefined);
    } catch (err) {
      throw new Error(`${where}.home: ${(err as Error).message}`);
    }
    return { name: e.name, password, ...home, ...settings };
  });
}
