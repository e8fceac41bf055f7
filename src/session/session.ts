import type { ExternalAuth } from '../auth/external.js';
import type { EventSink } from '../events/sink.js';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { secureSocket, type TlsSessionContext } from '../server/tls.js';
import { isAllowed, type Permission } from '../auth/permissions.js';
import type { AbuseGuard } from '../server/limits.js';
import type { Metrics } from '../server/metrics.js';
import { StorageError } from '../storage/types.js';
import type { Logger } from 'pino';
import { nameKey, type User } from '../auth/users.js';
import { COMMANDS, type CommandSpec } from '../commands/table.js';
import { replyForError } from '../commands/errors.js';
import type { Config } from '../config/index.js';
import type { DataChannel } from '../data/channel.js';
import { encodeLegacy, type LegacyEncoding } from '../encoding.js';
import { resolveFtpPath } from '../paths.js';
import type { Location, MountedStorage } from '../storage/mounts.js';
import type { Storages } from '../storage/storages.js';
import { formatReply, Reply, telnetText, type ReplyCode } from '../replies.js';
import type { Storage, StoragePath } from '../storage/types.js';
import { LineReader, parseCommand, type LineEvent } from './lines.js';
import type { Transfer } from './transfer.js';

/** What every session shares: configuration, storage and the user list. */
export interface ServerContext {
  config: Config;
  /** The server's storage and the extra buckets users' mounts may name. */
  storages: Storages;
  users: ReadonlyMap<string, User>;
  /** Logged-in sessions per user name (maxSessions). */
  sessionsPerUser: Map<string, number>;
  log: Logger;
  guard: AbuseGuard;
  metrics: Metrics;
  /** Present when EVENTS_URL is set. */
  events?: EventSink;
  /** Present when FTP_AUTH_URL is set. */
  externalAuth?: ExternalAuth;
}

/** A resolved path argument: what the client sees and what the storage takes. */
export interface ResolvedPath {
  ftp: string;
  storage: StoragePath;
}

/**
 * Received command bytes held before reading pauses. With the reply bound
 * below, no input makes the server hold more than a few tens of KiB for one
 * connection: a client that sends without reading stops itself.
 */
const MAX_BUFFERED_INPUT = 16 * 1024;
/** Reply bytes the client has not taken; past this no further command is read or run. */
const MAX_PENDING_OUTPUT = 64 * 1024;
/** Over-long command lines tolerated before the connection is closed. */
const MAX_OVERLONG_LINES = 3;
/** How long a client that does not read its last reply keeps the socket. */
const CLOSE_LINGER_MS = 2000;

/**
 * The control connection's state machine. One loop reads one command at a
 * time and runs it to its reply before reading the next; a transfer runs on
 * after its 150 so that ABOR and STAT (`duringTransfer`) are answered at
 * once, and any other command waits for the transfer's final reply.
 * Everything a command may change about the session lives here.
 */
export class Session {
  readonly id = randomBytes(6).toString('hex');
  readonly log: Logger;
  readonly clientAddress: string;

  user: User | undefined;
  pendingUser: string | undefined;
  cwd = '/';
  type: 'A' | 'I' = 'I';
  /** Set by REST; every other command consumes it (RFC 3659 §5.2). */
  restOffset = 0;
  renameFrom: ResolvedPath | undefined;
  epsvAll = false;
  /**
   * The code page names travel in: FTP_LEGACY_ENCODING until the client
   * sends OPTS UTF8 ON; undefined for UTF-8. Valid UTF-8 arguments are read as UTF-8 either way.
   */
  legacyEncoding: LegacyEncoding | undefined;
  mlstFacts = new Set(['type', 'size', 'modify', 'perm', 'unique']);
  failedLogins = 0;
  data: DataChannel | undefined;
  transfer: Transfer | undefined;

  /** The control connection: the TCP socket, or the TLS socket over it after AUTH TLS. */
  socket: Socket;
  /** The TCP socket under any TLS. */
  readonly #raw: Socket;
  /** TLS is on the control connection (AUTH TLS, or implicit FTPS). */
  secure = false;
  pbsz = false;
  /** PROT P: data connections are TLS too. */
  protectData = false;
  /** This control connection's own TLS context: data connections must resume a session issued through it. */
  tlsSession: TlsSessionContext | undefined;

  readonly #ended = new AbortController();
  #reader: LineReader;
  #closed = false;
  /** The client closed its side of the control connection (FIN). */
  #peerEnded = false;
  #unlisten: () => void = () => {};
  #overlong = 0;
  #lastCode: ReplyCode | undefined;
  /** The command being run, until its handler returns (a transfer's final reply comes later, from `transfer`). */
  #running: Promise<void> | undefined;
  /** Wakes the command loop: input arrived, output drained, or the connection closed. */
  #wake: (() => void) | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #loginTimer: NodeJS.Timeout | undefined;
  #view: MountedStorage | undefined;
  /** Whether this session is counted in sessionsPerUser. */
  #counted = false;

  constructor(
    socket: Socket,
    readonly server: ServerContext,
    /** clientAddress: the client's real address when a proxy told it (PROXY protocol); else the peer's. */
    options: { implicitTls?: boolean; clientAddress?: string; tlsSession?: TlsSessionContext } = {},
  ) {
    this.socket = socket;
    this.#raw = socket;
    this.tlsSession = options.tlsSession;
    if (options.implicitTls) {
      // Implicit FTPS protects everything from the first byte, data included.
      this.secure = true;
      this.pbsz = true;
      this.protectData = true;
    }
    this.clientAddress = options.clientAddress ?? (socket.remoteAddress ?? '').replace(/^::ffff:/i, '');
    this.log = server.log.child({ session: this.id, client: this.clientAddress });
    this.#reader = new LineReader(server.config.maxCommandBytes);
    this.legacyEncoding = server.config.legacyEncoding;
  }

  /**
   * Aborted when the control connection ends, for whatever reason. Every
   * storage call a command makes takes it, so nothing keeps working for a
   * client that has gone.
   */
  get signal(): AbortSignal {
    return this.#ended.signal;
  }

  /** The user's mount table once logged in; before that only capabilities are asked (FEAT). */
  get storage(): Storage {
    return this.#view ?? this.server.storages.main;
  }

  /** Where a path of this user's is stored (the bucket and key of an event). */
  locate(path: StoragePath): Location {
    return this.#view?.locate(path) ?? { key: path };
  }

  /** Whether a path of this user's is fixed: the root, a mount point or a directory above one. */
  isFixed(path: StoragePath): boolean {
    return this.#view?.isFixed(path) ?? path === '';
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The control connection is closed or closing: an upload not yet
   * published must not be (the commit rule). A half-close counts: a dying
   * client's FIN looks the same.
   */
  get controlGone(): boolean {
    return this.#closed || this.#peerEnded;
  }

  /** Greets the client and runs its commands until the connection ends. */
  start(): void {
    this.log.info({ event: 'session-start', secure: this.secure });
    this.#raw.setNoDelay(true);
    this.#raw.on('close', () => this.#onClose());
    this.#loginTimer = setTimeout(() => {
      this.log.info({ event: 'login-timeout' });
      this.close(Reply.ServiceNotAvailable, 'Login timeout: closing control connection.');
    }, this.server.config.loginTimeoutMs);
    this.#unlisten = this.#listen(this.socket);
    this.reply(Reply.ServiceReady, 's3ftp ready.');
    this.#loop().catch((err: unknown) => {
      this.log.error({ err }, 'command loop failed');
      this.close(Reply.ServiceNotAvailable, 'Internal error: closing control connection.');
    });
  }

  /** Reads commands from `socket`; returns what stops it (AUTH TLS moves to the TLS socket). */
  #listen(socket: Socket): () => void {
    const fill = () => this.#fill();
    // The client will send nothing more: what it sent is still run, and a transfer is given up.
    const ended = () => {
      this.#peerEnded = true;
      this.transfer?.abort();
      this.#wake?.();
    };
    socket.on('readable', fill);
    socket.on('drain', fill);
    socket.on('end', ended);
    // A reset ends the connection as surely as a FIN, and its 'close' comes a loop turn later.
    socket.on('error', (err) => {
      this.log.debug({ err }, 'control connection error');
      ended();
    });
    return () => {
      socket.off('readable', fill);
      socket.off('drain', fill);
      socket.off('end', ended);
    };
  }

  /** Moves received bytes into the line reader while both bounds allow, then wakes the loop. */
  #fill(): void {
    while (this.#reader.buffered < MAX_BUFFERED_INPUT && this.socket.writableLength <= MAX_PENDING_OUTPUT) {
      const chunk = this.socket.read() as Buffer | null;
      if (chunk === null) break;
      this.#reader.feed(chunk);
    }
    this.#wake?.();
  }

  async #loop(): Promise<void> {
    for (;;) {
      const event = await this.#nextCommand();
      if (!event) return;
      if ('tooLong' in event) {
        this.log.warn({ event: 'command-too-long' });
        if (++this.#overlong >= MAX_OVERLONG_LINES) {
          this.close(Reply.ServiceNotAvailable, 'Too many over-long command lines.');
          return;
        }
        this.reply(Reply.SyntaxError, 'Command line too long.');
        continue;
      }
      if ('telnetInside' in event) {
        this.reply(Reply.SyntaxErrorInArguments, 'Telnet commands inside a command line are not accepted; send a 0xFF as 0xFF 0xFF.');
        continue;
      }
      const { verb } = parseCommand(event.line);
      // Only ABOR and STAT speak while a transfer runs; anything else waits for its final reply.
      if (this.transfer && !COMMANDS[verb]?.duringTransfer) await this.transfer.done;
      if (this.#closed) return;
      this.#running = this.#execute(event.line).finally(() => (this.#running = undefined));
      await this.#running;
      // One command per turn of the event loop: a client with thousands of cheap commands
      // queued would otherwise run them all before any other session is heard.
      await nextTurn();
    }
  }

  /**
   * The next command line, once the client has taken its replies. The idle
   * timer runs only here, while no transfer runs: it measures the client's
   * silence, never the server's work.
   */
  async #nextCommand(): Promise<LineEvent | undefined> {
    for (;;) {
      if (this.#closed) return undefined;
      if (this.socket.writableLength <= MAX_PENDING_OUTPUT) {
        const event = this.#reader.next();
        if (event) return event;
        this.#fill();
        if (this.#reader.buffered > 0) continue;
        // Every command the client sent before its FIN has run.
        if (this.#peerEnded) {
          this.close();
          return undefined;
        }
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#armIdle();
      });
      this.#wake = undefined;
      clearTimeout(this.#idleTimer);
    }
  }

  /** Starts the idle timer if the loop is waiting for the client and no transfer runs. */
  #armIdle(): void {
    clearTimeout(this.#idleTimer);
    if (!this.#wake || this.transfer || this.#closed) return;
    this.#idleTimer = setTimeout(() => {
      this.log.info({ event: 'idle-timeout' });
      this.close(Reply.ServiceNotAvailable, 'Timeout: closing control connection.');
    }, this.server.config.idleTimeoutMs);
  }

  /** A transfer has sent its final reply: the session is waiting for the client again. */
  transferEnded(): void {
    this.transfer = undefined;
    this.#armIdle();
  }

  /**
   * Switches the control connection to TLS (AUTH TLS), right after the 234
   * reply. Whatever the client sent behind AUTH in plain text is dropped
   * unread (RFC 4217 §4; the CVE-2011-0411 class): only what arrives over
   * TLS is ever run.
   */
  upgradeToTls(tlsSession: TlsSessionContext): void {
    const raw = this.#raw;
    this.#unlisten();
    this.#reader.discard();
    // Node would hand bytes still buffered on the TCP socket to the TLS handshake.
    while (raw.read() !== null);
    const secure = secureSocket(raw, tlsSession);
    this.tlsSession = tlsSession;
    this.socket = secure;
    this.secure = true;
    this.#unlisten = this.#listen(secure);
    secure.once('secure', () => this.log.info({ event: 'tls', protocol: secure.getProtocol() }));
  }

  /** The user is in: the login deadline no longer applies. */
  loggedIn(user: User, view: MountedStorage): void {
    clearTimeout(this.#loginTimer);
    this.#countSession(-1);
    this.user = user;
    this.#view = view;
    this.cwd = '/';
    this.#countSession(1);
  }

  #countSession(delta: 1 | -1): void {
    // A session that has closed is never counted again: nothing would take it off.
    if (!this.user || this.#counted === (delta === 1) || (delta === 1 && this.#closed)) return;
    this.#counted = delta === 1;
    const counts = this.server.sessionsPerUser;
    const key = nameKey(this.user.name);
    const n = (counts.get(key) ?? 0) + delta;
    if (n > 0) counts.set(key, n);
    else counts.delete(key);
  }

  /** Whether the user may do this at this FTP path (normalised). */
  may(permission: Permission, ftpPath: string): boolean {
    const rules = this.user?.permissions;
    return !rules || isAllowed(rules, ftpPath, permission);
  }

  /** The user may do this at this path; otherwise Denied (550), with the reason in the log. */
  authorize(permission: Permission, target: ResolvedPath): void {
    if (this.may(permission, target.ftp)) return;
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
    if (!this.mayReplace(target.ftp)) {
      if (await this.exists(target)) this.authorize('delete', target);
    }
  }

  /** Whether this user may replace a file at this FTP path (delete permission there). */
  mayReplace(ftpPath: string): boolean {
    return this.may('delete', ftpPath);
  }

  /** Whether something is stored at target. */
  async exists(target: ResolvedPath): Promise<boolean> {
    return this.storage.stat(target.storage, this.signal).then(
      () => true,
      (err: unknown) => {
        if (err instanceof StorageError && err.code === 'NotFound') return false;
        throw err;
      },
    );
  }

  /**
   * A user with no list right where a command aimed must not learn from an
   * error's text whether a name exists there (a drop box): one text for all.
   */
  #hidesExistence(path: string): boolean {
    try {
      return !this.may('list', this.resolve(path).ftp);
    } catch {
      return false;
    }
  }

  /**
   * Answers a command that failed with `err`: its storage error's reply, or
   * 451 (logged); a 550 about `path` says nothing more where the user may not
   * list. Returns the code sent.
   */
  replyFailure(err: unknown, verb: string, path: string): ReplyCode {
    const { code, text } = replyForError(err);
    if (code === Reply.LocalError) this.log.error({ err, verb }, 'command failed');
    const hidden = code === Reply.FileUnavailable && this.#hidesExistence(path);
    this.reply(code, hidden ? 'Requested action not taken.' : text);
    return code;
  }

  /** Sends one reply (multi-line when given several lines). */
  reply(code: ReplyCode, lines: string | readonly string[]): void {
    this.#lastCode = code;
    if (this.#closed || !this.socket.writable) return;
    const text = formatReply(code, lines);
    // UTF-8 never holds a 0xFF; a legacy code page may.
    this.socket.write(this.legacyEncoding ? telnetText(encodeLegacy(text, this.legacyEncoding)) : text);
  }

  /** Resolves a path argument against the working directory; the user's mount table (storage) maps it further. */
  resolve(arg: string): ResolvedPath {
    const ftp = resolveFtpPath(this.cwd, arg, { legacyEncoding: this.legacyEncoding });
    return { ftp, storage: ftp.slice(1) };
  }

  /** Replaces the prepared data channel, releasing the previous one. */
  setDataChannel(channel: DataChannel | undefined): void {
    this.data?.close();
    this.data = channel;
  }

  /**
   * Sends a last reply (if given) and closes the connection. From here on no
   * command runs, the session's signal is aborted, and a running transfer is
   * aborted: an upload not yet published is discarded.
   */
  close(code?: ReplyCode, text?: string): void {
    if (this.#closed) return;
    if (code !== undefined) this.reply(code, text ?? '');
    this.#closed = true;
    this.#end();
    this.socket.end();
    // A client that does not read its last reply must not keep the socket open.
    setTimeout(() => this.#raw.destroy(), CLOSE_LINGER_MS).unref();
  }

  /**
   * Ends the session for a server shutdown: at once with 421 when idle; a
   * running transfer, or a command still at work (a resume copying its kept
   * prefix, a directory rename), may finish within `graceMs`. Then it is
   * stopped and waited for, so what it opened on the storage (a multipart
   * upload) is taken back before the process exits. Always settles: the
   * socket is destroyed if the client does not let it close.
   */
  async shutdown(graceMs: number): Promise<void> {
    const busy = () => this.transfer?.done ?? this.#running;
    // Within the grace, a command that ends by starting its transfer lets that transfer run on.
    const deadline = performance.now() + graceMs;
    for (let work = busy(); work && performance.now() < deadline; work = busy()) {
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([work.then(() => true), new Promise<false>((r) => (timer = setTimeout(r, deadline - performance.now(), false)))]);
      clearTimeout(timer);
      if (!finished) break;
    }
    // A transfer's 426 comes before the 421; closing aborts the session's signal, which stops a command at work.
    const transfer = this.transfer;
    if (transfer) {
      transfer.abort();
      await transfer.done;
    }
    this.close(Reply.ServiceNotAvailable, 'Server shutting down.');
    for (let left = busy(); left; left = busy()) {
      this.transfer?.abort();
      await left;
    }
    if (this.#raw.destroyed) return;
    await new Promise<void>((resolve) => {
      this.#raw.once('close', () => resolve());
      setTimeout(() => this.#raw.destroy(), CLOSE_LINGER_MS).unref();
    });
  }

  /** Preflight (500/502/530/501), then the handler; a throwing handler costs one reply, never the server. */
  async #execute(line: string): Promise<void> {
    const started = performance.now();
    const { verb, arg } = parseCommand(line);
    const spec: CommandSpec | undefined = COMMANDS[verb];
    const running = this.transfer;
    this.#lastCode = undefined;
    // A rename is RNFR immediately followed by RNTO: any other command (a refused RNFR
    // too) cancels it, and an RNTO ends it whatever its outcome (finally, below). A login
    // is USER immediately followed by PASS: AUTH TLS between them, or anything else, cancels it.
    if (verb !== 'RNTO') this.renameFrom = undefined;
    if (verb !== 'PASS') this.pendingUser = undefined;
    // The path the argument names: what the preflight authorizes, and by which a 550 is hidden.
    const path = spec?.pathArg ? spec.pathArg(arg) : arg;
    try {
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
        if (spec.perm && this.user && path !== undefined) this.authorize(spec.perm, this.resolve(path));
        await spec.handler(this, arg);
      }
    } catch (err) {
      this.replyFailure(err, verb, path ?? '');
    } finally {
      // A transfer command refused before its transfer started leaves the channel unused again.
      this.data?.release();
      if (verb === 'RNTO') this.renameFrom = undefined;
      // A REST holds for the next command only if it was accepted (350), or past commands that set
      // up the transfer it is for; ABOR and STAT may run inside a transfer, and leave it alone too.
      const restAccepted = verb === 'REST' && this.#lastCode === Reply.PendingFurtherInfo;
      const restKept = spec?.keepsRest && this.#lastCode !== undefined && this.#lastCode < 300;
      if (!restAccepted && !restKept && !(running && spec?.duringTransfer)) this.restOffset = 0;
    }
    // A transfer command's outcome is its final reply, sent once the transfer ends.
    const transfer = this.transfer !== running ? this.transfer : undefined;
    const logged = (code: ReplyCode | undefined) => {
      this.log.info({
        event: 'command',
        user: this.user?.name,
        // An unknown verb may be a password, typed alone or glued to PASS: none of it is logged.
        verb: spec ? verb : '(unknown)',
        ...(spec ? { arg: spec.secretArg ? '[redacted]' : arg.slice(0, 256) } : {}),
        code,
        ms: Math.round(performance.now() - started),
      });
      this.server.metrics.command(spec ? verb : undefined, code);
    };
    if (transfer) void transfer.done.then(logged);
    else logged(this.#lastCode);
  }

  #end(): void {
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#loginTimer);
    if (!this.#ended.signal.aborted) this.#ended.abort(new Error('control connection closed'));
    this.transfer?.abort();
    this.setDataChannel(undefined);
    this.#wake?.();
  }

  #onClose(): void {
    this.#closed = true;
    this.#end();
    this.#countSession(-1);
    this.log.info({ event: 'session-end', user: this.user?.name });
  }
}
