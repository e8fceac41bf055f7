import type { Socket } from 'node:net';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { acceptTls } from '../server/tls.js';
import { Reply } from '../replies.js';
import { replyForError } from '../commands/errors.js';
import type { Session, Transfer } from '../session/session.js';
import { StorageError } from '../storage/types.js';
import { streamed } from './reclaim.js';

export interface TransferPlan {
  direction: Transfer['direction'];
  /** The FTP path, for the log and STAT. */
  path: string;
  total?: number;
  /** Text of the 150 reply. */
  opening: string;
  /**
   * Moves the bytes over the open data connection. Resolves once the storage
   * has confirmed an upload, or every byte of a download was handed to the
   * socket. Storage failures must surface as StorageError; anything else is
   * taken as the data connection failing.
   */
  run(socket: Socket, signal: AbortSignal, count: (bytes: number) => void): Promise<void>;
}

type Outcome = 'ok' | 'aborted' | 'failed';

/**
 * Runs one transfer over the session's prepared data channel: 150, the bytes,
 * then exactly one final reply (226, or 425/426/451/55x). The channel is used
 * once and always released; ABOR and a closing control connection abort it.
 */
export async function runTransfer(s: Session, plan: TransferPlan): Promise<void> {
  const channel = s.data;
  s.data = undefined;
  if (!channel) {
    s.reply(Reply.CantOpenDataConnection, 'Use PORT, PASV or EPSV first.');
    return;
  }
  const controller = new AbortController();
  let socket: Socket | undefined;
  let settle!: () => void;
  const transfer: Transfer = {
    direction: plan.direction,
    path: plan.path,
    bytes: 0,
    total: plan.total,
    abort: () => {
      controller.abort();
      socket?.destroy();
      channel.close();
    },
    done: new Promise<void>((resolve) => (settle = resolve)),
  };
  s.transfer = transfer;
  const started = performance.now();
  let outcome: Outcome = 'failed';
  let error: unknown;
  try {
    s.reply(Reply.FileStatusOkay, plan.opening);
    try {
      socket = await channel.connect();
    } catch (err) {
      error = err;
      s.reply(Reply.CantOpenDataConnection, "Can't open data connection.");
      return;
    }
    if (s.protectData && s.server.tls) {
      // RFC 4217: the server is the TLS server on data connections, passive or active.
      const raw = socket;
      try {
        const secure = await acceptTls(raw, s.server.tls, s.server.config.dataTimeoutMs);
        socket = secure;
        if (s.server.config.ftps?.requireSessionReuse && !secure.isSessionReused()) {
          throw new Error('TLS session reuse required');
        }
      } catch (err) {
        error = err;
        // The TLS socket first, then the TCP one (channel.close, below): the other order crashes Node 20.
        socket.destroy();
        s.log.warn({ event: 'data-tls-refused', reason: (err as Error).message });
        s.reply(Reply.TlsFailed, `TLS on the data connection failed: ${(err as Error).message}.`);
        return;
      }
    }
    const timeoutMs = s.server.config.dataTimeoutMs;
    socket.setTimeout(timeoutMs, () => socket?.destroy(new Error('data connection stalled')));
    try {
      await plan.run(socket, controller.signal, (bytes) => (transfer.bytes += bytes));
      outcome = 'ok';
      s.reply(Reply.TransferComplete, 'Transfer complete.');
    } catch (err) {
      error = err;
      if (controller.signal.aborted || !(err instanceof StorageError)) {
        outcome = 'aborted';
        s.reply(Reply.TransferAborted, 'Connection closed; transfer aborted.');
      } else {
        const { code, text } = replyForError(err);
        s.reply(code, text);
      }
    }
  } finally {
    socket?.destroy();
    channel.close();
    s.transfer = undefined;
    s.log.info({
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
    settle();
  }
}

/**
 * Sends a storage stream to the data connection. A failing source becomes a
 * StorageError (451), so it is told apart from a failing socket (426).
 */
export async function sendStream(
  source: Readable,
  socket: Socket,
  options: { signal: AbortSignal; count: (bytes: number) => void; transform?: Transform },
): Promise<void> {
  let sourceError: unknown;
  source.once('error', (err) => (sourceError ??= err));
  const stages = options.transform ? [options.transform] : [];
  try {
    await pipeline(source, counter(options.count), ...stages, socket, { signal: options.signal });
  } catch (err) {
    throw sourceError !== undefined ? asStorageError(sourceError) : err;
  }
}

/** Counts bytes as they pass, for STAT and the transfer log. */
export function counter(count: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      count(chunk.length);
      streamed(chunk.length);
      done(null, chunk);
    },
  });
}

/** Storage drivers throw StorageError; a stream they returned may still fail with anything. */
export function asStorageError(err: unknown): StorageError {
  return err instanceof StorageError ? err : new StorageError('Unavailable', String((err as Error)?.message ?? err), { cause: err });
}
