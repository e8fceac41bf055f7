import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { nameKey, verifyPassword, type PasswordSecret, type User } from '../auth/users.js';
import { isAllowed } from '../auth/permissions.js';
import { plainAddress } from '../data/channel.js';
import { Reply } from '../replies.js';
import type { Session } from '../session/session.js';
import type { MountedStorage } from '../storage/mounts.js';
import { StorageError, type Storage } from '../storage/types.js';
import { tlsRequiredForLogin } from './security.js';

/** Failed logins before the connection is closed (vsftpd's max_login_fails). */
const MAX_LOGIN_FAILURES = 3;
const MAX_FAILED_LOGIN_DELAY_MS = 5000;

const decoys = new WeakMap<ReadonlyMap<string, User>, PasswordSecret>();
const nameKeys = new WeakMap<ReadonlyMap<string, User>, ReadonlySet<string>>();

/** The local users' names as users are told apart (nameKey), once per users map. */
function localNameKeys(users: ReadonlyMap<string, User>): ReadonlySet<string> {
  let keys = nameKeys.get(users);
  if (!keys) nameKeys.set(users, (keys = new Set([...users.keys()].map(nameKey))));
  return keys;
}

/** A secret no password matches, as costly to check as the configured users' secrets. */
function decoy(users: ReadonlyMap<string, User>): PasswordSecret {
  let secret = decoys.get(users);
  if (!secret) {
    // Shaped like the costliest check there is: an scrypt hash if any user has one.
    const like = [...users.values()].map((u) => u.password).find((p) => p.kind === 'scrypt') ?? users.values().next().value?.password;
    secret =
      like?.kind === 'scrypt'
        ? { ...like, salt: randomBytes(like.salt.length), hash: randomBytes(like.hash.length) }
        : { kind: 'plain', value: randomBytes(32).toString('hex') };
    decoys.set(users, secret);
  }
  return secret;
}

export function user(s: Session, arg: string): void {
  if (s.user) {
    s.reply(Reply.NotLoggedIn, "Can't change to another user.");
    return;
  }
  const name = arg.trim();
  // Refuse before the password crosses the network in clear text.
  if (tlsRequiredForLogin(s, s.server.users.get(name)?.requireTls)) {
    s.reply(Reply.NotLoggedIn, 'Login requires TLS: use AUTH TLS first.');
    return;
  }
  s.pendingUser = name;
  // Same answer for every name, so USER does not reveal which accounts exist.
  s.reply(Reply.NeedPassword, 'Please specify the password.');
}

export async function pass(s: Session, arg: string): Promise<void> {
  if (s.user) {
    s.reply(Reply.LoggedIn, 'Already logged in.');
    return;
  }
  const name = s.pendingUser;
  if (name === undefined) {
    s.reply(Reply.BadSequence, 'Login with USER first.');
    return;
  }
  s.pendingUser = undefined;
  const local = s.server.users.get(name);
  // A locked-out address fails whatever it sends: neither a password check nor the provider is spent on it.
  const lockedOut = (): boolean => s.server.guard.isLockedOut(s.clientAddress);
  const provider = s.server.externalAuth;
  let account: User | undefined;
  // A case variant of a local name is no one's: names are exact, and the provider must not be
  // asked for it (its user would share the local user's session count, or be the same account).
  if (local || !provider || localNameKeys(s.server.users).has(nameKey(name))) {
    // An unknown name costs as much as a known one, so timing does not reveal which names exist;
    // a plain password (FTP_USER) beside scrypt hashes costs the decoy's scrypt as well.
    const fake = decoy(s.server.users);
    const check = async (): Promise<boolean> => {
      const checked = await verifyPassword(local?.password ?? fake, arg, s.signal, lockedOut);
      if (local?.password.kind === 'plain' && fake.kind === 'scrypt') await verifyPassword(fake, arg, s.signal, lockedOut);
      return checked;
    };
    // A check under way cannot be stopped; a session that ends meanwhile (a shutdown) does not wait for it.
    const checked = await Promise.race([check().catch(() => false), once(s.signal, 'abort').then(() => false)]);
    if (s.closed) return;
    account = checked ? local : undefined;
  } else if (!lockedOut()) {
    // Only names not defined locally reach the provider: it can add users, never take over a local one.
    // A locked-out address is not passed on, so the provider is not a second target for guessing.
    // A session that ends meanwhile (the client left, a shutdown) stops waiting for the provider.
    const result = await provider.authenticate(
      {
        username: name,
        password: arg,
        clientAddress: s.clientAddress,
        serverAddress: plainAddress(s.socket.localAddress),
        protocol: s.secure ? 'ftps' : 'ftp',
      },
      s.signal,
    );
    if (s.closed) return;
    s.server.metrics.authHook.inc({ result: result.ok ? (result.cached ? 'cached' : 'ok') : result.reason });
    if (!result.ok) {
      // 'refused' is the provider's answer; anything else means it is down or misbehaving.
      const entry = { event: 'auth-provider', user: name.slice(0, 128), reason: result.reason, detail: result.detail };
      if (result.reason === 'refused') s.log.warn(entry);
      else s.log.error(entry);
    } else if (tlsRequiredForLogin(s, result.user.requireTls)) {
      // USER could not know this user wants TLS; refuse now that the provider said so.
      s.log.warn({ event: 'auth-provider', user: name, reason: 'user requires TLS' });
    } else {
      account = result.user;
    }
  }
  const ok = account !== undefined;
  if (!ok || !account || lockedOut()) {
    s.failedLogins++;
    s.log.warn({ event: 'login-failed', user: name.slice(0, 128), failures: s.failedLogins });
    s.server.metrics.logins.inc({ result: 'failed' });
    const { recent, lockedOut: nowLockedOut } = s.server.guard.loginFailed(s.clientAddress);
    if (nowLockedOut) s.log.warn({ event: 'lockout', failures: recent });
    // The delay grows with the address's recent failures, not just this connection's.
    // A session that ends meanwhile (the client left, or a shutdown) stops waiting.
    await sleep(Math.min(s.server.config.limits.failedLoginDelayMs * recent, MAX_FAILED_LOGIN_DELAY_MS), undefined, { signal: s.signal }).catch(() => undefined);
    if (s.closed) return;
    if (lockedOut()) {
      s.close(Reply.ServiceNotAvailable, 'Too many failed logins; try later.');
    } else if (s.failedLogins >= MAX_LOGIN_FAILURES) {
      s.close(Reply.ServiceNotAvailable, 'Too many failed logins.');
    } else {
      s.reply(Reply.NotLoggedIn, 'Login incorrect.');
    }
    return;
  }
  // Every login builds the mount table anew, so a user from the identity provider (or a reloaded
  // users file) that names a bucket this server does not serve is refused here.
  let view: MountedStorage;
  try {
    view = s.server.storages.viewFor(account);
  } catch (err) {
    s.log.error({ event: 'login-refused', user: account.name, reason: (err as Error).message });
    s.reply(Reply.NotLoggedIn, "Login refused: this account's storage is not served here.");
    return;
  }
  // Like SFTPGo, and unlike vsftpd, a missing home is created rather than refused; so is a
  // directory a permission rule names where the user may not MKD it (a drop box's `/incoming`
  // under a read-only `/`): otherwise nobody but an administrator could ever make it.
  await view.mkdirAll('', s.signal);
  const rules = account.permissions ?? [];
  const needed = rules.filter((r) => r.dir !== '/' && !isAllowed(rules, parentFtpPath(r.dir), 'mkdir'));
  for (const r of needed) await ensureDirectory(view, r.dir.slice(1), s.signal);
  // The client may have gone during the waits above: it is no session to count.
  if (s.closed) return;
  // Checked and counted in one turn of the event loop, so two logins at once cannot both pass.
  const open = s.server.sessionsPerUser.get(nameKey(account.name)) ?? 0;
  if (account.maxSessions !== undefined && open >= account.maxSessions) {
    s.log.warn({ event: 'login-refused', user: account.name, reason: 'maxSessions', sessions: open });
    s.reply(Reply.NotLoggedIn, `Too many sessions for this user (at most ${account.maxSessions}); try later.`);
    return;
  }
  s.loggedIn(account, view);
  s.log.info({ event: 'login', user: account.name });
  s.server.metrics.logins.inc({ result: 'ok' });
  s.reply(Reply.LoggedIn, 'Login successful.');
}

function parentFtpPath(path: string): string {
  return path.slice(0, path.lastIndexOf('/')) || '/';
}

async function ensureDirectory(storage: Storage, dir: string, signal: AbortSignal): Promise<void> {
  try {
    await storage.stat(dir, signal);
  } catch (err) {
    if (!(err instanceof StorageError && err.code === 'NotFound')) throw err;
    await storage.mkdirAll(dir, signal).catch((e: unknown) => {
      // A rule for a directory no mount holds has nothing to make (and nothing to allow).
      if (!(e instanceof StorageError && e.code === 'Denied')) throw e;
    });
  }
}

export function quit(s: Session): void {
  s.close(Reply.ClosingControl, 'Goodbye.');
}
