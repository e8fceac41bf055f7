import type { Socket } from 'node:net';
import { finished } from 'node:stream/promises';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { replyForError } from '../commands/errors.js';
import type { DataChannel } from '../data/channel.js';
import { streamed } from '../data/reclaim.js';
import { endedCleanly } from '../data/streams.js';
import { Reply, type ReplyCode } from '../replies.js';
import type { TLSSocket } from 'node:tls';
import { acceptDataTls, closeNotified, tlsRefusalText } from '../server/tls.js';
import { StorageError } from '../storage/types.js';
import type { Session } from './session.js';

/** A running data transfer, as ABOR, STAT and a closing connection see it. */
export interface Transfer {
  /** 'hash': a HASH, which reads the file on the server's side and moves no data (startWork). */
  readonly direction: 'upload' | 'download' | 'list' | 'hash';
  readonly path: string;
  bytes: number;
  readonly total?: number;
  /** Stops the transfer; its command then answers 426, and an upload publishes nothing. */
  abort(): void;
  /** Settles with the final reply's code once it has been sent; never rejects. */
  readonly done: Promise<ReplyCode>;
}

/** The open data connection, as a transfer's `run` sees it. */
export interface DataConnection {
  /** The connection to read or write: TLS under PROT P, else the TCP socket. */
  socket: Socket;
  /** Aborted by ABOR, by the control connection closing, or by a shutdown. */
  signal: AbortSignal;
  count(bytes: number): void;
  /**
   * For uploads, called once the client's bytes have ended: resolves if they
   * may be published (the data connection ended cleanly, not by a reset;
   * the control connection is still open; no ABOR came), else rejects.
   */
  commit(): Promise<void>;
}

/**
 * Phase 2 of a transfer command. Phase 1, in the command's handler, has
 * resolved, authorized, validated and opened everything, so every refusal
 * was answered before this point.
 */
export interface TransferPlan {
  direction: Exclude<Transfer['direction'], 'hash'>;
  /** The FTP path, for the log and STAT. */
  path: string;
  total?: number;
  /** Text of the 150 reply. */
  opening: string;
  /** Text of the 226 reply, when it has more to say than that the transfer completed. */
  completed?: string;
  /** Aborted with the transfer; phase 1 may have handed it to the storage already. */
  controller?: AbortController;
  /**
   * Moves the bytes. Resolves once the storage has confirmed an upload, or
   * every byte of a download was handed to the socket. Storage failures
   * must surface as StorageError; anything else is taken as the data
   * connection failing (426).
   */
  run(connection: DataConnection): Promise<void>;
  /** Releases what phase 1 opened, once, however the transfer ended; awaited before the final reply. */
  release?(): void | Promise<void>;
}

type Outcome = 'ok' | 'aborted' | 'failed';
/** How a transfer ended, and its final reply. */
interface Result {
  outcome: Outcome;
  error?: unknown;
  code: ReplyCode;
  text: string;
}

/**
 * Runs phase 2 of a transfer over the session's prepared data channel: 150,
 * the bytes, then exactly one final reply (226, or 425/426/451/522/55x).
 * Returns at once: the session reads on, so ABOR and STAT are answered
 * while the bytes move. The data channel is used once and always released.
 */
export function startTransfer(s: Session, plan: TransferPlan): void {
  const channel = s.data;
  s.data = undefined;
  const controller = plan.controller ?? new AbortController();
  let settle!: (code: ReplyCode) => void;
  const transfer: Transfer = {
    direction: plan.direction,
    path: plan.path,
    bytes: 0,
    total: plan.total,
    abort: () => {
      controller.abort(new Error('transfer aborted'));
      channel?.close();
    },
    done: new Promise<ReplyCode>((resolve) => (settle = resolve)),
  };
  s.transfer = transfer;
  const started = performance.now();
  run(s, plan, channel, transfer, controller)
    .catch((err: unknown): Result => {
      s.log.error({ err }, 'transfer failed unexpectedly');
      return { outcome: 'failed', error: err, code: Reply.LocalError, text: '' };
    })
    .then(({ outcome, error, code }) => {
      s.log[outcome === 'ok' ? 'info' : 'warn']({
        event: 'transfer',
        user: s.user?.name,
        direction: plan.direction,
        path: plan.path,
        bytes: transfer.bytes,
        ms: Math.round(performance.now() - started),
        result: outcome,
        ...(error !== undefined && outcome !== 'ok' ? { reason: (error as Error).message } : {}),
      });
      s.server.metrics.transfer(plan.direction, outcome, transfer.bytes);
      s.transferEnded();
      settle(code);
    });
}

/**
 * Runs a long command that moves no data (HASH of a big file) as a transfer
 * runs: the session reads on, so ABOR stops it (426, then the ABOR's 226);
 * the client leaving stops it, a FIN too (the session aborts its transfer);
 * and the commands behind it wait for its reply: what `work` resolves, or,
 * if it throws, the reply the command's error would get (about `arg`).
 */
export function startWork(
  s: Session,
  verb: 'HASH',
  arg: string,
  path: string,
  work: (signal: AbortSignal) => Promise<{ code: ReplyCode; text: string }>,
): void {
  const controller = new AbortController();
  let settle!: (code: ReplyCode) => void;
  s.transfer = {
    direction: 'hash',
    path,
    bytes: 0,
    abort: () => controller.abort(new Error('aborted')),
    done: new Promise<ReplyCode>((resolve) => (settle = resolve)),
  };
  void work(controller.signal)
    .then(
      ({ code, text }) => (s.reply(code, text), code),
      (err: unknown) => {
        if (!controller.signal.aborted) return s.replyFailure(err, verb, arg);
        s.reply(Reply.TransferAborted, 'Aborted.');
        return Reply.TransferAborted;
      },
    )
    .then((code) => {
      s.transferEnded();
      settle(code);
    });
}

async function run(
  s: Session,
  plan: TransferPlan,
  channel: DataChannel | undefined,
  transfer: Transfer,
  controller: AbortController,
): Promise<Result> {
  let tcp: Socket | undefined;
  let socket: Socket | undefined;
  let result: Result = { outcome: 'failed', code: Reply.CantOpenDataConnection, text: "Can't open data connection." };
  const strictEnd = s.server.config.ftps?.requireCloseNotify ?? true;
  try {
    if (!channel) throw new Error('no data channel');
    s.reply(Reply.FileStatusOkay, plan.opening);
    tcp = await channel.connect();
    socket = tcp;
    if (s.protectData && s.tlsSession) {
      // RFC 4217: the server is the TLS server on data connections, passive or active.
      try {
        socket = await acceptDataTls(tcp, s.socket as TLSSocket, s.tlsSession, {
          timeoutMs: s.server.config.dataTimeoutMs,
          requireReuse: s.server.config.ftps?.requireSessionReuse ?? true,
          upload: plan.direction === 'upload',
          watchEnd: plan.direction === 'upload' && strictEnd,
        });
      } catch (err) {
        // An ABOR (or a shutdown) during the handshake is an aborted transfer (426), not a refusal.
        if (controller.signal.aborted) throw err;
        s.log.warn({ event: 'data-tls-refused', reason: (err as Error).message });
        result = { outcome: 'failed', error: err, code: Reply.TlsFailed, text: tlsRefusalText(err) };
        throw err;
      }
    }
    const stream = socket;
    stream.setTimeout(s.server.config.dataTimeoutMs, () => stream.destroy(new Error('data connection stalled')));
    const data = tcp;
    await plan.run({
      socket: stream,
      signal: controller.signal,
      count: (bytes) => {
        transfer.bytes += bytes;
        streamed(bytes);
      },
      commit: () => commitUpload(s, stream, data, controller.signal, stream !== data && strictEnd),
    });
    result = { outcome: 'ok', code: Reply.TransferComplete, text: plan.completed ?? 'Transfer complete.' };
  } catch (err) {
    if (result.error !== undefined) {
      // TLS refused: its 522 stands.
    } else if (controller.signal.aborted || s.controlGone || (socket && !(err instanceof StorageError))) {
      result = { outcome: 'aborted', error: err, code: Reply.TransferAborted, text: 'Connection closed; transfer aborted.' };
    } else if (socket) {
      result = { outcome: 'failed', error: err, ...replyForError(err) };
    } else {
      result.error = err;
    }
  } finally {
    // The TLS socket first, then the TCP one: the other order crashes Node 20.
    socket?.destroy();
    tcp?.destroy();
    channel?.close();
    if (result.outcome !== 'ok') controller.abort(result.error);
    await plan.release?.();
  }
  s.reply(result.code, result.text);
  return result;
}

/**
 * The commit rule for uploads: publish only what the client finished. Its
 * data connection must have ended with a FIN, not a reset; under PROT P,
 * with the client's close_notify instead (a bare FIN is anyone's on the
 * path; a reset after close_notify counts for nothing), unless
 * FTPS_REQUIRE_CLOSE_NOTIFY is off; and since a
 * dying client's two connections close a few ms apart in either order, the
 * control connection gets `uploadSettleMs` (and the event-loop turns that
 * deliver what already arrived) to show it is closing too. Abort after this
 * point still reaches the storage through the signal, up to its publish.
 */
async function commitUpload(s: Session, socket: Socket, tcp: Socket, signal: AbortSignal, closeNotify: boolean): Promise<void> {
  // The window counts from the client's last byte: the checks below run within it, not before it.
  const settled = s.server.config.uploadSettleMs > 0 ? sleep(s.server.config.uploadSettleMs) : undefined;
  if (closeNotify) {
    // The client's TLS said the data is over, after its last byte: a reset after it is no
    // truncation (a client that closes with anything of ours unread resets).
    if (!closeNotified(socket)) throw new Error('data connection ended without TLS close_notify');
  } else if (!(await endedCleanly(tcp))) {
    throw new Error('data connection reset by the client');
  }
  // Our side closes too, under TLS with its close_notify, which ftplib's unwrap() waits for:
  // awaited, so the socket is not destroyed before it is sent (end() may wait, see secureSocket).
  // How our end goes is no part of the commit rule.
  await finished(socket.end(), { readable: false }).catch(() => {});
  await nextTurn();
  await nextTurn();
  await settled;
  // A loop turn runs its timers before it polls for I/O: after a busy stretch the window's timer
  // fires before a close that arrived within it is read. One more turn reads it.
  await nextTurn();
  if (s.controlGone) throw new Error('control connection closed before the upload was complete');
  if (signal.aborted) throw new Error('transfer aborted');
}
