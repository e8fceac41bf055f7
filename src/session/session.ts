import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { isAllowed, type Permission } from '../auth/permissions.js';
import { stripListOptions } from '../commands/listing.js';
import type { AbuseGuard } from '../server/limits.js';
import type { Metrics } from '../server/metrics.js';
import { StorageError } from '../storage/types.js';
import type { Logger } from 'pino';
import type { User } from '../auth/users.js';
import { COMMANDS, type CommandSpec } from '../commands/table.js';
import { replyForError } from '../commands/errors.js';
import type { Config } from '../config/index.js';
import type { DataChannel } from '../data/channel.js';
import { resolveFtpPath, toStoragePath } from '../paths.js';
import { formatReply, Reply, type ReplyCode } from '../replies.js';
import type { Storage, StoragePath } from '../storage/types.js';
import { LineReader, parseCommand } from './lines.js';

/** What every session shares: configuration, storage and the user list. */
export interface ServerContext {
  config: Config;
  storage: Storage;
  users: ReadonlyMap<string, User>;
  log: Logger;
  guard: AbuseGuard;
  /** Present when FTPS is configured. */
  tls?: SecureContext;
  metrics: Metrics;
}

/** A running data transfer, as ABOR, STAT and a closing connection see it. */
export interface Transfer {
  readonly direction: 'upload' | 'download' | 'list';
  readonly path: string;
  bytes: number;
  readonly total?: number;
  /** Stops the transfer; its command then answers 426. */
  abort(): void;
  /** Settles after the transfer command's final reply has been sent. */
  readonly done: Promise<void>;
}

/** A resolved path argument: what the client sees and what the storage takes. */
export interface ResolvedPath {
  ftp: string;
  storage: StoragePath;
}

/** Commands waiting while another one runs; past this, reading pauses (bounded memory per connection). */
const MAX_QUEUED_COMMANDS = 16;
/** Over-long command lines tolerated before the connection is closed. */
const MAX_OVERLONG_LINES = 3;

/**
 * The control connection's state machine. Commands run one at a time in
 * arrival order; while a transfer runs, the commands marked `duringTransfer`
 * (ABOR, STAT) are answered at once. Everything a command may change about
 * the session lives here.
 */
export class Session {
  readonly id = randomBytes(6).toString('hex');
  readonly log: Logger;
  readonly clientAddress: string;

  user: User | undefined;
  pendingUser: string | undefined;
  cwd = '/';
  type: 'A' | 'I' = 'I';
  restOffset = 0;
  renameFrom: ResolvedPath | undefined;
  epsvAll = false;
  mlstFacts = new Set(['type', 'size', 'modify', 'perm', 'unique']);
  failedLogins = 0;
  data: DataChannel | undefined;
  transfer: Transfer | undefined;

  #reader: LineReader;
  #queue: string[] = [];
  #running = false;
  #closed = false;
  #overlong = 0;
  #lastCode: ReplyCode | undefined;

  /** The control connection: the TCP socket, or the TLS socket over it after AUTH TLS. */
  socket: Socket;
  /** The TCP socket under any TLS; its idle timer is the session's. */
  readonly #raw: Socket;
  /** TLS is on the control connection (AUTH TLS, or implicit FTPS). */
  secure = false;
  pbsz = false;
  /** PROT P: data connections are TLS too. */
  protectData = false;

  constructor(
    socket: Socket,
    readonly server: ServerContext,
    /** clientAddress: the client's real address when a proxy told it (PROXY protocol); else the peer's. */
    options: { implicitTls?: boolean; clientAddress?: string } = {},
  ) {
    this.socket = socket;
    this.#raw = socket;
    if (options.implicitTls) {
      // Implicit FTPS protects everything from the first byte, data included.
      this.secure = true;
      this.pbsz = true;
      this.protectData = true;
    }
    this.clientAddress = options.clientAddress ?? (socket.remoteAddress ?? '').replace(/^::ffff:/i, '');
    this.log = server.log.child({ session: this.id, client: this.clientAddress });
    this.#reader = new LineReader(server.config.maxCommandBytes);
  }

  /** Greets the client and starts reading commands. */
  start(): void {
    const raw = this.#raw;
    this.log.info({ event: 'session-start', secure: this.secure });
    raw.setNoDelay(true);
    raw.setTimeout(this.server.config.idleTimeoutMs, () => {
      if (this.transfer) return; // the data connection has its own timeout
      this.log.info({ event: 'idle-timeout' });
      this.close(Reply.ServiceNotAvailable, 'Timeout: closing control connection.');
    });
    raw.on('close', () => this.#onClose());
    this.#listen(this.socket);
    this.reply(Reply.ServiceReady, 's3ftp ready.');
  }

  #listen(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.log.debug({ err }, 'control connection error'));
  }

  /**
   * Switches the control connection to TLS (AUTH TLS). The caller has sent
   * the 234 reply; anything the client sent in plain text after AUTH is
   * dropped, as RFC 4217 asks.
   */
  upgradeToTls(context: SecureContext): void {
    const raw = this.#raw;
    raw.removeAllListeners('data');
    this.#reader = new LineReader(this.server.config.maxCommandBytes);
    this.#queue.length = 0;
    const secure = new TLSSocket(raw, { isServer: true, secureContext: context });
    this.socket = secure;
    this.secure = true;
    this.#listen(secure);
    secure.once('secure', () => this.log.info({ event: 'tls', protocol: secure.getProtocol() }));
  }

  /** The user may do this at this path; otherwise Denied (550), with the reason in the log. */
  authorize(permission: Permission, target: ResolvedPath): void {
    const rules = this.user?.permissions;
    if (!rules || isAllowed(rules, target.ftp, permission)) return;
    this.log.warn({ event: 'permission-denied', user: this.user?.name, permission, path: target.ftp });
    throw new StorageError('Denied', `${permission} not permitted`);
  }

  /**
   * Replacing a file destroys its content, so it takes the delete permission
   * as well as write or rename: a drop box may add files but not overwrite
   * them. (Between this check and the write another session could create the
   * file; that race is accepted.)
   */
  async authorizeOverwrite(target: ResolvedPath): Promise<void> {
    const rules = this.user?.permissions;
    if (!rules || isAllowed(rules, target.ftp, 'delete')) return;
    const exists = await this.storage.stat(target.storage).then(
      () => true,
      (err: unknown) => {
        if (err instanceof StorageError && err.code === 'NotFound') return false;
        throw err;
      },
    );
    if (exists) this.authorize('delete', target);
  }

  get storage(): Storage {
    return this.server.storage;
  }

  /** Sends one reply (multi-line when given several lines). */
  reply(code: ReplyCode, lines: string | readonly string[]): void {
    this.#lastCode = code;
    if (!this.#closed && this.socket.writable) this.socket.write(formatReply(code, lines));
  }

  /** Resolves a path argument against the working directory inside the user's home. */
  resolve(arg: string): ResolvedPath {
    const ftp = resolveFtpPath(this.cwd, arg);
    return { ftp, storage: toStoragePath(this.user?.home ?? '', ftp) };
  }

  /** Replaces the prepared data channel, releasing the previous one. */
  setDataChannel(channel: DataChannel | undefined): void {
    this.data?.close();
    this.data = channel;
  }

  /** Sends a last reply and closes the connection. */
  close(code?: ReplyCode, text?: string): void {
    if (this.#closed) return;
    if (code !== undefined) this.reply(code, text ?? '');
    this.#closed = true;
    this.socket.end();
    // A client that does not read its last reply must not keep the socket open.
    setTimeout(() => this.#raw.destroy(), 2000).unref();
  }

  /**
   * Ends the session for a server shutdown: at once with 421 when idle; a
   * running transfer may finish within `graceMs`, then it is aborted.
   */
  async shutdown(graceMs: number): Promise<void> {
    const transfer = this.transfer;
    if (transfer) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([transfer.done, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      transfer.abort();
      await transfer.done;
    }
    this.close(Reply.ServiceNotAvailable, 'Server shutting down.');
    if (!this.#raw.destroyed) await once(this.#raw, 'close');
  }

  get closed(): boolean {
    return this.#closed;
  }

  #onData(chunk: Buffer): void {
    for (const event of this.#reader.push(chunk)) {
      if ('tooLong' in event) {
        this.log.warn({ event: 'command-too-long' });
        if (++this.#overlong >= MAX_OVERLONG_LINES) {
          this.close(Reply.ServiceNotAvailable, 'Too many over-long command lines.');
          return;
        }
        this.#enqueue('\0too-long');
        continue;
      }
      const { verb } = parseCommand(event.line);
      if (this.transfer && COMMANDS[verb]?.duringTransfer) {
        void this.#execute(event.line);
      } else {
        this.#enqueue(event.line);
      }
    }
  }

  #enqueue(line: string): void {
    this.#queue.push(line);
    if (this.#queue.length >= MAX_QUEUED_COMMANDS) this.socket.pause();
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const line = this.#queue.shift()!;
        if (this.#queue.length < MAX_QUEUED_COMMANDS / 2) this.socket.resume();
        await this.#execute(line);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Preflight (500/502/530/501), then the handler; a throwing handler costs one reply, never the server. */
  async #execute(line: string): Promise<void> {
    if (this.#closed) return;
    const started = performance.now();
    if (line === '\0too-long') {
      this.reply(Reply.SyntaxError, 'Command line too long.');
      return;
    }
    this.#raw.setTimeout(this.server.config.idleTimeoutMs);
    const { verb, arg } = parseCommand(line);
    const spec: CommandSpec | undefined = COMMANDS[verb];
    this.#lastCode = undefined;
    if (!spec) {
      this.reply(Reply.SyntaxError, 'Unknown command.');
    } else if (spec.needsLogin && !this.user) {
      this.reply(Reply.NotLoggedIn, 'Please login with USER and PASS.');
    } else if (!spec.handler || (spec.capability && !this.storage.capabilities[spec.capability])) {
      this.reply(Reply.NotImplemented, 'Command not implemented.');
    } else if (spec.arg === 'required' && arg.trim() === '') {
      this.reply(Reply.SyntaxErrorInArguments, `${verb} needs an argument.`);
    } else if (spec.arg === 'none' && arg.trim() !== '') {
      this.reply(Reply.SyntaxErrorInArguments, `${verb} takes no argument.`);
    } else {
      // A rename is RNFR immediately followed by RNTO; anything between cancels it.
      if (verb !== 'RNFR' && verb !== 'RNTO') this.renameFrom = undefined;
      try {
        if (spec.perm && this.user && !(spec.listOptions && verb === 'STAT' && arg.trim() === '')) {
          this.authorize(spec.perm, this.resolve(spec.listOptions ? stripListOptions(arg) : arg));
        }
        await spec.handler(this, arg);
      } catch (err) {
        const { code, text } = replyForError(err);
        if (code === Reply.LocalError) this.log.error({ err, verb }, 'command failed');
        this.reply(code, text);
      }
    }
    this.log.info({
      event: 'command',
      user: this.user?.name,
      verb: spec ? verb : verb.slice(0, 16),
      arg: verb === 'PASS' ? '[redacted]' : arg.slice(0, 256),
      code: this.#lastCode,
      ms: Math.round(performance.now() - started),
    });
    this.server.metrics.command(spec ? verb : undefined, this.#lastCode);
  }

  #onClose(): void {
    this.#closed = true;
    this.transfer?.abort();
    this.setDataChannel(undefined);
    this.log.info({ event: 'session-end', user: this.user?.name });
  }
}
