import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { nameKey, parseUsersFile, type User } from './users.js';

/** FTP_USERS_FILE, or the secret behind FTP_USERS_JSON, as the server re-reads it (SIGHUP, reloadUsers(), every reloadMs). */
export interface UsersFileConfig {
  /** Absolute path of the users file; for a secret, `secretsmanager:<id>` (what the logs name). */
  path: string;
  /**
   * FTP_USERS_SECRET_ID: re-read this Secrets Manager secret (its SecretString
   * is the users file) instead of a file. At start its value comes as
   * FTP_USERS_JSON, which ECS fills from the same secret.
   */
  secretId?: string;
  /** Re-read every this many ms, acted on only when the content changed; 0: only when asked. */
  reloadMs: number;
  /** Users defined beside the file (FTP_USER): kept in every version; a version that also names one is refused. */
  fixed: User[];
}

/** What one re-read did. */
export type UsersReload =
  | { outcome: 'reloaded'; users: number; added: string[]; removed: string[]; changed: string[] }
  | { outcome: 'unchanged' }
  | { outcome: 'refused'; reason: string }
  /** There is no users file: FTP_USERS_JSON and FTP_USER are read at start only. */
  | { outcome: 'no-file' };

/** At most this many names per list in the reload log line, so a large file cannot make a huge line. */
const MAX_NAMES_LOGGED = 50;

/**
 * The file's users followed by the fixed ones; throws an Error naming a fixed
 * user the file also defines (`where` names the file's source), so neither can
 * shadow the other.
 */
export function combineUsers(fileUsers: readonly User[], fixed: readonly User[], where: string): User[] {
  const names = new Set(fileUsers.map((u) => nameKey(u.name)));
  const clash = fixed.find((u) => names.has(nameKey(u.name)));
  if (clash) throw new Error(`"${clash.name}" is also defined in ${where}`);
  return [...fileUsers, ...fixed];
}

/** Names added, removed and changed (any field, the password hash included) from `before` to `after`. */
export function diffUsers(before: ReadonlyMap<string, User>, after: ReadonlyMap<string, User>): { added: string[]; removed: string[]; changed: string[] } {
  const added = [...after.keys()].filter((name) => !before.has(name));
  const removed = [...before.keys()].filter((name) => !after.has(name));
  const changed = [...after.keys()].filter((name) => before.has(name) && fingerprint(before.get(name)!) !== fingerprint(after.get(name)!));
  return { added, removed, changed };
}

/**
 * A stable text of everything a user entry says. Buffers (salt, hash)
 * serialise as their bytes; sets (the permission rules) as their sorted
 * members, which JSON.stringify alone writes as {}.
 */
function fingerprint(user: User): string {
  return JSON.stringify(user, (_key, value: unknown) => (value instanceof Set ? [...value].sort() : value));
}

/** Where the server's current users live: the reloader reads and swaps them here. */
export interface UsersHolder {
  get(): ReadonlyMap<string, User>;
  set(users: ReadonlyMap<string, User>): void;
}

/**
 * Re-reads the users file and swaps the users in whole, or keeps the old ones
 * and logs one error line naming the problem. Re-reads never overlap; the
 * periodic one acts only on content it has not seen.
 */
export class UsersReloader {
  readonly #source: UsersFileConfig;
  readonly #users: UsersHolder;
  readonly #log: Logger;
  /** The digest of the content in force, and of the last one refused (or its read error): a timer tick on either does nothing. */
  #accepted: string | undefined;
  #refused: string | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #ticking = false;
  #timer: NodeJS.Timeout | undefined;
  #secrets: import('@aws-sdk/client-secrets-manager').SecretsManagerClient | undefined;

  /** Why a user cannot be served (a bucket not in S3_EXTRA_BUCKETS): the check loadConfig makes at start. */
  readonly #check: (user: User) => string | undefined;

  constructor(source: UsersFileConfig, users: UsersHolder, log: Logger, check: (user: User) => string | undefined = () => undefined) {
    this.#source = source;
    this.#users = users;
    this.#log = log;
    this.#check = check;
  }

  /** Starts the periodic re-read when reloadMs > 0; it never keeps the process alive. */
  start(): void {
    if (this.#source.reloadMs <= 0 || this.#timer) return;
    this.#timer = setInterval(() => {
      // A read still hanging (a slow network file system) is not stacked on.
      if (this.#ticking) return;
      this.#ticking = true;
      void this.#enqueue('timer', true).finally(() => (this.#ticking = false));
    }, this.#source.reloadMs).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#secrets?.destroy();
    this.#secrets = undefined;
  }

  /**
   * Re-reads the file now (after any re-read in progress) and says what came
   * of it; never rejects. `trigger` names what asked, for the log line: an
   * explicit request logs even an unchanged file, the timer only a change.
   */
  reload(trigger: string): Promise<UsersReload> {
    return this.#enqueue(trigger, false);
  }

  /** `quiet`: the periodic check, which says nothing about content it has seen, good or bad. */
  #enqueue(trigger: string, quiet: boolean): Promise<UsersReload> {
    const next = this.#queue.then(() =>
      this.#reloadOnce(trigger, quiet).catch((err: unknown): UsersReload => {
        // A bug here must neither take the server down nor stop later re-reads.
        this.#log.error({ event: 'users-reload-refused', file: this.#source.path, trigger, err }, 'the users file was not reloaded; the users before it stay');
        return { outcome: 'refused', reason: 'internal error' };
      }),
    );
    this.#queue = next;
    return next;
  }

  /** The users file's text: from the file, or the secret's current version (the SDK's default credentials and region). */
  async #read(): Promise<string> {
    const secretId = this.#source.secretId;
    if (secretId === undefined) return readFile(this.#source.path, 'utf8');
    // Loaded only by servers that use it, so a plain start stays lean.
    const { GetSecretValueCommand, SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
    this.#secrets ??= new SecretsManagerClient({ maxAttempts: 3, requestHandler: { connectionTimeout: 5000, requestTimeout: 10_000 } });
    const out = await this.#secrets.send(new GetSecretValueCommand({ SecretId: secretId }));
    if (out.SecretString === undefined) throw new Error('the secret holds no SecretString');
    return out.SecretString;
  }

  async #reloadOnce(trigger: string, quiet: boolean): Promise<UsersReload> {
    const file = this.#source.path;
    const refuse = (reason: string, key: string): UsersReload => {
      this.#refused = key;
      this.#log.error({ event: 'users-reload-refused', file, trigger, reason }, 'the users file was not reloaded; the users before it stay');
      return { outcome: 'refused', reason };
    };
    let text: string;
    try {
      text = await this.#read();
    } catch (err) {
      // An unreadable file is logged once per trigger, not once per timer tick.
      const reason = `cannot read ${file}: ${(err as Error).message}`;
      if (quiet && this.#refused === reason) return { outcome: 'unchanged' };
      return refuse(reason, reason);
    }
    const digest = createHash('sha256').update(text).digest('hex');
    if (digest === this.#accepted || (quiet && digest === this.#refused)) {
      if (!quiet) this.#log.info({ event: 'users-reload', file, trigger, outcome: 'unchanged' });
      return { outcome: 'unchanged' };
    }
    let fileUsers: User[];
    try {
      fileUsers = parseUsersFile(text);
    } catch (err) {
      return refuse((err as Error).message, digest);
    }
    for (const user of fileUsers) {
      const problem = this.#check(user);
      if (problem) return refuse(`user "${user.name}": ${problem}`, digest);
    }
    let next: Map<string, User>;
    try {
      next = new Map(combineUsers(fileUsers, this.#source.fixed, 'the users file').map((u) => [u.name, u]));
    } catch (err) {
      // The same rule as at start: FTP_USER's name may not also be in the file.
      return refuse(`FTP_USER: ${(err as Error).message}`, digest);
    }
    const diff = diffUsers(this.#users.get(), next);
    this.#accepted = digest;
    this.#refused = undefined;
    if (diff.added.length + diff.removed.length + diff.changed.length === 0) {
      // Same users written differently (spacing, key order): nothing to swap.
      if (!quiet) this.#log.info({ event: 'users-reload', file, trigger, outcome: 'unchanged' });
      return { outcome: 'unchanged' };
    }
    this.#users.set(next);
    this.#log.info({
      event: 'users-reloaded',
      file,
      trigger,
      users: next.size,
      added: diff.added.length,
      removed: diff.removed.length,
      changed: diff.changed.length,
      names: {
        added: diff.added.slice(0, MAX_NAMES_LOGGED),
        removed: diff.removed.slice(0, MAX_NAMES_LOGGED),
        changed: diff.changed.slice(0, MAX_NAMES_LOGGED),
      },
    });
    return { outcome: 'reloaded', users: next.size, ...diff };
  }
}
