import { constants, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { FtpsConfig } from '../config/index.js';

/**
 * Forward-secret AEAD suites only: ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305 for TLS 1.2, and the TLS 1.3 suites (all of them are
 * forward-secret AEAD). No RSA key exchange, no CBC, no SHA-1 MACs. The order
 * is the server's preference (honorCipherOrder).
 */
export const DEFAULT_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const TLS_MIN_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsMinVersion = (typeof TLS_MIN_VERSIONS)[number];
export const DEFAULT_MIN_VERSION: TlsMinVersion = 'TLSv1.2';

/** The parts of FtpsConfig that make a SecureContext. */
type TlsPolicy = Pick<FtpsConfig, 'cert' | 'key' | 'ciphers' | 'minVersion'>;

/** Builds a SecureContext with the policy; throws (OpenSSL's error) when the cipher list selects nothing. */
function buildContext(policy: Partial<TlsPolicy>): SecureContext {
  return createSecureContext({
    cert: policy.cert,
    key: policy.key,
    minVersion: policy.minVersion ?? DEFAULT_MIN_VERSION,
    ciphers: policy.ciphers ?? DEFAULT_CIPHERS,
    honorCipherOrder: true,
    // OpenSSL answers a renegotiation request with a no_renegotiation alert
    // (TLS 1.2; TLS 1.3 has no renegotiation). secureSocket() adds Node's own guard.
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  });
}

/**
 * Checks a cipher list and minimum version as the server would use them;
 * returns an error message, or undefined when OpenSSL accepts them.
 */
export function checkTlsPolicy(ciphers: string, minVersion: TlsMinVersion): string | undefined {
  try {
    buildContext({ ciphers, minVersion });
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code === 'ERR_SSL_NO_CIPHER_MATCH' ? 'OpenSSL knows none of these suites' : 'not accepted by OpenSSL';
  }
}

/**
 * A context with the TLS policy, built at start only so that a certificate and
 * key that cannot be used together fail at once (and by `check-config`), and
 * by tests. Connections never share it: a control connection and its data
 * connections use their own sessionContext(), or any client could resume on
 * any connection the session it got on its own.
 */
export function createTlsContext(ftps: FtpsConfig): SecureContext {
  return buildContext(ftps);
}

const sessionOf = new WeakMap<TLSSocket, TlsSessionContext>();

/**
 * The TLS state of one control connection: a SecureContext of its own, so the
 * session tickets and session IDs it issues are its own (own ticket keys, own
 * cache). A data connection that resumes a session through this context
 * resumed one issued to this control connection's client, never another
 * connection's.
 */
export class TlsSessionContext {
  #context: SecureContext;
  readonly #policy: TlsPolicy;
  /**
   * Whether the handshake under way may be sent session tickets: not an
   * upload's (see ticketsFor), set before each data connection's handshake.
   */
  #tickets = true;

  constructor(ftps: FtpsConfig) {
    this.#policy = ftps;
    this.#context = this.#fresh();
  }

  /** The context for this control connection and its data connections. */
  get context(): SecureContext {
    return this.#context;
  }

  /**
   * Makes every session issued so far unresumable: a fresh context, new
   * ticket keys, empty cache. Call it after a data handshake that did not
   * resume: that handshake may have been a stranger's, and it may already
   * hold a session of this context (TLS 1.2 sends the ticket inside the
   * handshake, TLS 1.3 right after it) before we can refuse it.
   */
  revoke(): void {
    this.#context = this.#fresh();
  }

  /** A new context with its own ticket keys, issuing tickets as #tickets says. */
  #fresh(): SecureContext {
    return ticketsFor(buildContext(this.#policy), () => this.#tickets);
  }

  /** The next handshake is a data connection's: an upload's gets no ticket. */
  dataHandshake(upload: boolean): void {
    this.#tickets = !upload;
  }
}

/** Node's native SecureContext, as its own tests drive ticket keys (test-https-resume-after-renew). */
interface NativeContext {
  enableTicketKeyCallback?: () => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[];
}

/**
 * Session tickets by what the connection is. A control connection, a
 * download and a listing get a new ticket with every handshake, a resumed
 * one too, as vsftpd does: Node's own ticket callback accepts a ticket
 * without renewing it, so OpenSSL sent none after a TLS 1.3 resumption, and
 * a client that uses a ticket once (curl) then had none for its next data
 * connection, refused (522). An upload's data connection gets none at all
 * (`tickets()` false): its client does not read while it sends, so a ticket
 * sent there stays unread, the client's close becomes a reset, and the
 * reset drops what the server had not read yet (the body's tail, its
 * close_notify). The keys are this context's own, made here, so they die
 * with it (revoke()). Node without this hook keeps its own callback.
 */
function ticketsFor(context: SecureContext, tickets: () => boolean): SecureContext {
  const native = (context as unknown as { context?: NativeContext }).context;
  if (typeof native?.enableTicketKeyCallback !== 'function') return context;
  const [name, hmac, aes] = [randomBytes(16), randomBytes(16), randomBytes(16)];
  native.enableTicketKeyCallback();
  // Node's protocol (test-https-resume-after-renew): issuing, 1 with the keys, name and IV, or 0 for
  // no ticket; accepting, 2 to accept and renew, 1 to accept, 0 for a ticket that is not ours.
  native.onticketkeycallback = (ticketName, _iv, issuing) => {
    if (issuing) return [tickets() ? 1 : 0, hmac, aes, name, randomBytes(16)];
    if (!ticketName.equals(name)) return [0, hmac, aes];
    return [tickets() ? 2 : 1, hmac, aes];
  };
  return context;
}

/** A fresh per-control-connection TLS context (about 1 ms of CPU); see TlsSessionContext. */
export function sessionContext(ftps: FtpsConfig): TlsSessionContext {
  return new TlsSessionContext(ftps);
}

/** How long end() waits for encrypted bytes already handed to the socket before it sends close_notify anyway. */
const CLOSE_NOTIFY_WAIT_MS = 1000;

/**
 * A server-side TLS socket whose end() sends close_notify before the FIN.
 *
 * Node's TLSWrap sends close_notify from its shutdown only when no write of
 * encrypted bytes is in flight; a write that finished at once still counts
 * as in flight until Node's next check phase. Otherwise it queues the TCP
 * FIN first and writes close_notify after it, which fails unseen (EPIPE, or
 * EBADF once the socket is destroyed): the peer gets a FIN with no close_notify. That happens when end() comes
 * in the same event-loop turn as such a write, as with TLS 1.3's
 * NewSessionTicket messages, which the server writes right after the
 * handshake: a short listing written from the handshake's own callback, or
 * an upload whose bytes and close_notify all arrive in one turn. OpenSSL 3
 * clients then fail: ftplib's unwrap() raises UNEXPECTED_EOF_WHILE_READING,
 * or SHUTDOWN_WHILE_IN_INIT when a read had already met the bare FIN.
 * So end() here waits until the TLS layer holds no encrypted output.
 */
class ServerTlsSocket extends TLSSocket {
  /** Set when the TLS socket reads through a TcpReader: what ended its stream. */
  readonly #reader: TcpReader | undefined;
  #eof: 'close_notify' | 'tcp' | undefined;

  constructor(socket: Socket | TcpReader, options: ConstructorParameters<typeof TLSSocket>[1]) {
    super(socket, options);
    this.#reader = socket instanceof TcpReader ? socket : undefined;
  }

  /** True once the peer's close_notify ended the stream; known only for a socket made with watchEnd. */
  get closeNotified(): boolean {
    return this.#eof === 'close_notify';
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    // The TLS layer ends the stream on close_notify, or on the TCP end it reads from the reader.
    if (chunk === null && this.#reader && this.#eof === undefined) this.#eof = this.#reader.tcpEndPassed ? 'tcp' : 'close_notify';
    return super.push(chunk, encoding);
  }

  override _final(callback: (error?: Error | null) => void): void {
    encryptedOutputFlushed(this).then(
      () => super._final(callback),
      () => super._final(callback),
    );
  }
}

/**
 * A TCP socket read through JavaScript, for the TLS socket laid over it.
 * Node's TLS over a TCP socket reads the TCP end itself and reports it as it
 * reports a close_notify; through this reader it reads the end only after
 * every byte before it, so a close_notify that came first has ended the TLS
 * stream already (ServerTlsSocket.closeNotified). It costs a JavaScript hop
 * per chunk, so only uploads use it.
 */
class TcpReader extends Duplex {
  /** Set just before the TLS socket is handed the TCP end (this listener is registered before its). */
  tcpEndPassed = false;

  constructor(readonly tcp: Socket) {
    super({ allowHalfOpen: true });
    tcp.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) tcp.pause();
    });
    tcp.on('end', () => this.push(null));
    tcp.on('error', (err) => this.destroy(err));
    tcp.on('close', () => this.destroy());
    this.once('end', () => (this.tcpEndPassed = true));
  }

  override _read(): void {
    this.tcp.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.tcp.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.tcp.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.tcp.destroy();
    callback(error);
  }
}

/**
 * True when the client ended a data connection's TLS stream with its
 * close_notify (RFC 5246 §7.2.1), not with a bare TCP FIN that anyone on the
 * path could have sent (a truncation attack). Known only for a socket
 * accepted with watchEnd; false for any other.
 */
export function closeNotified(socket: Socket): boolean {
  return socket instanceof ServerTlsSocket && socket.closeNotified;
}

/** Resolves once the socket's TLS layer has no encrypted bytes waiting or in flight, or after CLOSE_NOTIFY_WAIT_MS. */
async function encryptedOutputFlushed(socket: TLSSocket): Promise<void> {
  // Node finishes a write that completed at once in its check phase, before JS immediates.
  await nextTurn();
  // The TLS handle's writeQueueSize is OpenSSL's unsent output, which includes a write in flight.
  const pending = () => (socket as unknown as { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0;
  const deadline = Date.now() + CLOSE_NOTIFY_WAIT_MS;
  while (pending() > 0 && !socket.destroyed && Date.now() < deadline) await sleep(1);
}

/**
 * Wraps a socket as the TLS server side with the per-socket policy (no
 * renegotiation) and remembers which control connection's context it uses.
 * Every server-side TLS socket, control (AUTH TLS, implicit) and data, is made
 * here, and its end() sends close_notify before the FIN (see ServerTlsSocket).
 */
export function secureSocket(socket: Socket, context: SecureContext | TlsSessionContext, options: { watchEnd?: boolean } = {}): TLSSocket {
  const secureContext = context instanceof TlsSessionContext ? context.context : context;
  const secure = new ServerTlsSocket(options.watchEnd ? new TcpReader(socket) : socket, { isServer: true, secureContext });
  // Node's guard: a renegotiation that gets past OpenSSL emits 'error'.
  secure.disableRenegotiation();
  if (context instanceof TlsSessionContext) sessionOf.set(secure, context);
  return secure;
}

/**
 * True when data resumed a TLS session issued through control's own context:
 * the data connection belongs to the client that holds the control
 * connection (vsftpd's require_ssl_reuse). Both sockets must come from secureSocket().
 */
export function sameTlsSession(control: TLSSocket, data: TLSSocket): boolean {
  const session = sessionOf.get(control);
  return session !== undefined && sessionOf.get(data) === session && data.isSessionReused();
}

/** Why a TLS handshake was refused; the reply text never carries OpenSSL's own message. */
export type TlsErrorCode = 'TLS_HANDSHAKE_FAILED' | 'TLS_HANDSHAKE_TIMEOUT' | 'TLS_SESSION_NOT_REUSED';

/** A refused TLS handshake; the OpenSSL error, if any, is the cause (for the log only). */
export class TlsError extends Error {
  override name = 'TlsError';
  constructor(readonly code: TlsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The 522 reply text for a refused data-connection handshake: fixed text, no OpenSSL detail. */
export function tlsRefusalText(err: unknown): string {
  switch (err instanceof TlsError ? err.code : 'TLS_HANDSHAKE_FAILED') {
    case 'TLS_SESSION_NOT_REUSED':
      return 'Data connection must resume the TLS session of the control connection.';
    case 'TLS_HANDSHAKE_TIMEOUT':
      return 'TLS handshake on the data connection timed out.';
    default:
      return 'TLS handshake on the data connection failed.';
  }
}

/**
 * Wraps an accepted or connected socket as the TLS server side (secureSocket)
 * and resolves once the handshake is done; rejects with a TlsError.
 */
export function acceptTls(
  socket: Socket,
  context: SecureContext | TlsSessionContext,
  timeoutMs: number,
  options: { watchEnd?: boolean } = {},
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = secureSocket(socket, context, options);
    const timer = setTimeout(() => fail(new TlsError('TLS_HANDSHAKE_TIMEOUT', 'TLS handshake timed out')), timeoutMs);
    // A peer that hangs up, or a socket we close (ABOR, shutdown), ends the handshake at once, not at the timeout.
    const gone = () => fail(new TlsError('TLS_HANDSHAKE_FAILED', 'the connection closed during the TLS handshake'));
    const fail = (err: Error) => {
      clearTimeout(timer);
      secure.off('end', gone).off('close', gone);
      secure.destroy();
      reject(err instanceof TlsError ? err : new TlsError('TLS_HANDSHAKE_FAILED', 'TLS handshake failed', { cause: err }));
    };
    secure.once('error', fail);
    secure.once('end', gone);
    secure.once('close', gone);
    secure.once('secure', () => {
      clearTimeout(timer);
      secure.off('error', fail).off('end', gone).off('close', gone);
      resolve(secure);
    });
  });
}

/**
 * The TLS handshake of a data connection (RFC 4217: the server is the TLS
 * server). With requireReuse it resolves only when the data connection
 * resumed the control connection's session (sameTlsSession); otherwise it
 * revokes the control connection's sessions (see TlsSessionContext.revoke),
 * destroys the socket and rejects with TLS_SESSION_NOT_REUSED. With
 * watchEnd, closeNotified() later tells how the client ended its stream.
 */
export async function acceptDataTls(
  socket: Socket,
  control: TLSSocket,
  session: TlsSessionContext,
  options: { timeoutMs: number; requireReuse: boolean; upload: boolean; watchEnd?: boolean },
): Promise<TLSSocket> {
  session.dataHandshake(options.upload);
  const data = await acceptTls(socket, session, options.timeoutMs, { watchEnd: options.watchEnd });
  if (options.requireReuse && !sameTlsSession(control, data)) {
    session.revoke();
    data.destroy();
    throw new TlsError('TLS_SESSION_NOT_REUSED', 'data connection did not resume the control connection TLS session');
  }
  return data;
}
