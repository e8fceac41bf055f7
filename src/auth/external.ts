import { createHmac, randomBytes } from 'node:crypto';
import { ConfigError, int, type Env } from '../config/env.js';
import { parseHookUrl } from '../events/endpoint.js';
import { signatureHeaders } from '../events/signature.js';
import { MAX_PASSWORD_BYTES, parseHome, parseUserSettings, USER_SETTINGS, type User } from './users.js';

/**
 * An external identity provider (FTP_AUTH_URL): the server POSTs the
 * credentials and gets back a user or a refusal. Secure by default: any
 * answer that is not a well-formed acceptance (timeouts, network errors, 5xx,
 * redirects, unknown keys) refuses the login.
 */
export interface ExternalAuthConfig {
  url: URL;
  /** Signs each request body (X-S3ftp-Timestamp, X-S3ftp-Signature) so the provider can tell it came from us. */
  secret?: string;
  /** Deadline of one request, answer body included. */
  timeoutMs: number;
  /** How long an acceptance is reused for the same credentials and addresses; 0 = never. */
  cacheMs: number;
}

export interface AuthRequest {
  username: string;
  password: string;
  clientAddress: string;
  serverAddress: string;
  /** Whether the control connection is TLS-protected (AUTH TLS done, or implicit FTPS). */
  protocol: 'ftp' | 'ftps';
}

/**
 * Why a login was not accepted. Only `refused` is the provider's own answer
 * (log it as a failed login, warn); every other reason means the provider is
 * unreachable or misbehaving (log it at error level). All are answered 530.
 */
export type AuthFailureReason =
  | 'refused'
  | 'timeout'
  | 'unavailable'
  | 'bad-status'
  | 'malformed';

export type AuthResult =
  | { ok: true; user: User; cached: boolean }
  | { ok: false; reason: AuthFailureReason; /** For the log; never holds the password. */ detail: string };

const NAME = /^[\w.@-]{1,128}$/;
/** An answer is a small JSON object; anything bigger is a misbehaving provider. */
const MAX_ANSWER_BYTES = 64 * 1024;
const MAX_CACHE_ENTRIES = 10_000;
const USER_KEYS = new Set(['name', 'home', ...USER_SETTINGS]);
const ANSWER_KEYS = new Set(['allow', 'user', 'reason']);


/** Reads FTP_AUTH_* variables; undefined when FTP_AUTH_URL is unset. Throws ConfigError naming the variable. */
export function loadExternalAuthConfig(env: Env = process.env): ExternalAuthConfig | undefined {
  if (env.FTP_AUTH_LAMBDA?.trim()) {
    throw new ConfigError('FTP_AUTH_LAMBDA: not supported; give the Lambda a function URL and set FTP_AUTH_URL to it');
  }
  const raw = env.FTP_AUTH_URL?.trim();
  if (!raw) {
    for (const name of ['FTP_AUTH_SECRET', 'FTP_AUTH_TIMEOUT', 'FTP_AUTH_CACHE_SECONDS']) {
      if (env[name]?.trim()) throw new ConfigError(`${name}: needs FTP_AUTH_URL`);
    }
    return undefined;
  }
  const secret = env.FTP_AUTH_SECRET || undefined;
  if (secret !== undefined && Buffer.byteLength(secret) < 16) {
    throw new ConfigError('FTP_AUTH_SECRET: must be at least 16 bytes (e.g. "openssl rand -hex 32")');
  }
  return {
    url: parseHookUrl('FTP_AUTH_URL', raw),
    secret,
    timeoutMs: int(env, 'FTP_AUTH_TIMEOUT', 5, 1, 60) * 1000,
    cacheMs: int(env, 'FTP_AUTH_CACHE_SECONDS', 0, 0, 3600) * 1000,
  };
}


/** A typed failure, thrown inside and turned into an AuthResult at the edge. */
class AuthFailure extends Error {
  constructor(
    readonly reason: AuthFailureReason,
    message: string,
  ) {
    super(message);
  }
}

/** Asks the identity provider; one instance per process (it holds the cache and its key). */
export class ExternalAuth {
  readonly #config: ExternalAuthConfig;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  /**
   * Keyed by an HMAC of the whole request under a key that never leaves this
   * process, so no password is held in clear, and a dump of the cache alone
   * gives nothing to test guesses against.
   */
  readonly #cacheKey = randomBytes(32);
  readonly #cache = new Map<string, { user: User; expires: number }>();

  constructor(config: ExternalAuthConfig, options: { fetch?: typeof fetch; now?: () => number } = {}) {
    this.#config = config;
    this.#fetch = options.fetch ?? fetch;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Accepts with a validated user, or refuses with a reason; never throws.
   * `signal` (the session's) ends the wait for the provider early.
   */
  async authenticate(request: AuthRequest, signal?: AbortSignal): Promise<AuthResult> {
    // Names the users file could not hold are refused before anything leaves the server.
    if (!NAME.test(request.username)) return { ok: false, reason: 'refused', detail: 'user name not valid' };
    if (request.password === '' || Buffer.byteLength(request.password) > MAX_PASSWORD_BYTES) {
      return { ok: false, reason: 'refused', detail: 'password empty or too long' };
    }
    const key = this.#config.cacheMs > 0 ? this.#keyOf(request) : undefined;
    if (key !== undefined) {
      const hit = this.#cache.get(key);
      if (hit && hit.expires > this.#now()) return { ok: true, user: hit.user, cached: true };
      if (hit) this.#cache.delete(key);
    }
    try {
      const user = await this.#ask(request, signal);
      if (key !== undefined) this.#remember(key, user);
      return { ok: true, user, cached: false };
    } catch (err) {
      if (err instanceof AuthFailure) return { ok: false, reason: err.reason, detail: err.message };
      return { ok: false, reason: 'unavailable', detail: String((err as Error)?.message ?? err) };
    }
  }

  #keyOf(r: AuthRequest): string {
    // JSON of an array keeps the fields apart: no two requests share an encoding.
    const text = JSON.stringify([r.username, r.password, r.clientAddress, r.serverAddress, r.protocol]);
    return createHmac('sha256', this.#cacheKey).update(text).digest('base64');
  }

  #remember(key: string, user: User): void {
    if (this.#cache.size >= MAX_CACHE_ENTRIES) {
      const now = this.#now();
      for (const [k, v] of this.#cache) if (v.expires <= now) this.#cache.delete(k);
      // Still full: forget the oldest entry (a Map iterates in insertion order).
      if (this.#cache.size >= MAX_CACHE_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(key, { user, expires: this.#now() + this.#config.cacheMs });
  }

  async #ask(request: AuthRequest, ended?: AbortSignal): Promise<User> {
    const { url, secret, timeoutMs } = this.#config;
    const body = JSON.stringify({
      username: request.username,
      password: request.password,
      clientAddress: request.clientAddress,
      serverAddress: request.serverAddress,
      protocol: request.protocol,
    });
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = ended ? AbortSignal.any([deadline, ended]) : deadline;
    let text: string;
    let status: number;
    try {
      const answer = this.#fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          'user-agent': 's3ftp-auth',
          ...(secret ? signatureHeaders(secret, body) : {}),
        },
        body,
        // A redirect is a misconfiguration and could lead to plain http: refuse it.
        redirect: 'error',
        signal,
      });
      // The signal is enforced here too: undici 6 (Node 22) may stop passing it on after a
      // garbage collection (nodejs/node#55428), and a provider that stalls would then hold the login.
      const response = await untilAborted(answer, signal).catch((err: unknown) => {
        void answer.then((late) => late.body?.cancel(), () => undefined).catch(() => undefined);
        throw err;
      });
      status = response.status;
      if (status === 401 || status === 403) {
        await response.body?.cancel().catch(() => {});
        throw new AuthFailure('refused', `provider answered ${status}`);
      }
      if (status !== 200) {
        await response.body?.cancel().catch(() => {});
        throw new AuthFailure('bad-status', `provider answered ${status}`);
      }
      text = await readBounded(response, signal);
    } catch (err) {
      if (err instanceof AuthFailure) throw err;
      if (deadline.aborted) throw new AuthFailure('timeout', `no answer within ${timeoutMs} ms`);
      if (ended?.aborted) throw new AuthFailure('unavailable', 'the session ended before the provider answered');
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new AuthFailure('unavailable', `${(err as Error).message}${cause ? `: ${cause.code ?? cause.message}` : ''}`);
    }
    return parseAnswer(text, request.username);
  }
}

/** Settles as `work` does, or rejects once `signal` aborts, whichever comes first. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => reject(signal.reason);
    signal.addEventListener('abort', stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', stop));
  });
}

/** The answer's body, at most MAX_ANSWER_BYTES of it; an abort of `signal` cancels the read. */
async function readBounded(response: Response, signal: AbortSignal): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const cancel = (): void => void reader.cancel(signal.reason).catch(() => undefined);
  signal.addEventListener('abort', cancel, { once: true });
  try {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      // A cancelled read ends as if the body had: the abort is the answer.
      signal.throwIfAborted();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_ANSWER_BYTES) {
        cancel();
        throw new AuthFailure('malformed', `answer larger than ${MAX_ANSWER_BYTES} bytes`);
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}

/**
 * Parses `{ "allow": true, "user": {...} }` or `{ "allow": false }` as
 * strictly as the users file: unknown keys are an error, not ignored, so a
 * misspelt `permisions` cannot silently grant full access. `home` (or
 * `mounts`) is required: a provider that forgets it must not hand out the
 * whole bucket.
 */
function parseAnswer(text: string, username: string): User {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new AuthFailure('malformed', 'answer is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new AuthFailure('malformed', 'answer is not an object');
  const answer = doc as Record<string, unknown>;
  const unknown = Object.keys(answer).filter((k) => !ANSWER_KEYS.has(k));
  if (unknown.length > 0) throw new AuthFailure('malformed', `unknown key(s) ${unknown.map((k) => JSON.stringify(k.slice(0, 40))).join(', ')}`);
  if (answer.reason !== undefined && typeof answer.reason !== 'string') throw new AuthFailure('malformed', '"reason" must be a string');
  if (answer.allow === false) {
    if (answer.user !== undefined) throw new AuthFailure('malformed', 'a refusal carries no "user"');
    const reason = typeof answer.reason === 'string' ? `: ${JSON.stringify(answer.reason.slice(0, 200))}` : '';
    throw new AuthFailure('refused', `provider refused${reason}`);
  }
  if (answer.allow !== true) throw new AuthFailure('malformed', '"allow" must be true or false');
  const u = answer.user as Record<string, unknown> | undefined;
  if (typeof u !== 'object' || u === null || Array.isArray(u)) throw new AuthFailure('malformed', 'an acceptance needs a "user" object');
  const extra = Object.keys(u).filter((k) => !USER_KEYS.has(k));
  if (extra.length > 0) throw new AuthFailure('malformed', `user: unknown key(s) ${extra.map((k) => JSON.stringify(k.slice(0, 40))).join(', ')}`);
  if (u.name !== undefined && u.name !== username) throw new AuthFailure('malformed', 'user.name differs from the name logged in with');
  if (typeof u.home !== 'string' && u.mounts === undefined) throw new AuthFailure('malformed', 'user.home must be a path (or the user needs mounts)');
  try {
    const settings = parseUserSettings(u);
    return {
      name: username,
      // The provider checked the password; this secret matches nothing, so no other path can log this user in.
      password: { kind: 'plain', value: randomBytes(32).toString('base64') },
      ...parseHome(u.home, settings.mounts !== undefined),
      ...settings,
    };
  } catch (err) {
    throw new AuthFailure('malformed', `user: ${(err as Error).message}`);
  }
}
