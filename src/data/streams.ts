import type { Socket } from 'node:net';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StorageError } from '../storage/types.js';

const EMPTY = Buffer.alloc(0);
/**
 * Received chunks smaller than this are copied together before the storage
 * sees them: a storage holds chunks until a part or a batch is full, and a
 * client sending one byte per TCP segment would otherwise make it hold a
 * million 1-byte buffers per MiB (hundreds of bytes of overhead each).
 */
const SMALL_CHUNK_BYTES = 8 * 1024;
/** The buffer small chunks are gathered in. */
const GATHER_BYTES = 64 * 1024;

/**
 * Sends a storage stream to the data connection. A failing source becomes a
 * StorageError (451), so it is told apart from a failing socket (426).
 */
export async function sendStream(
  source: Readable,
  socket: Socket,
  options: { signal: AbortSignal; count: (bytes: number) => void; stages?: Transform[] },
): Promise<void> {
  // Whichever failed first is the cause: a data connection that fails (a reset, a
  // stall) makes the pipeline destroy the source with the socket's own error.
  let first: { source: unknown } | 'socket' | undefined;
  socket.once('error', () => (first ??= 'socket'));
  socket.once('close', () => (first ??= 'socket'));
  source.once('error', (err) => (first ??= { source: err }));
  const stages = options.stages ?? [];
  try {
    await pipeline(source, counter(options.count), ...stages, socket, { signal: options.signal });
  } catch (err) {
    throw typeof first === 'object' ? asStorageError(first.source) : err;
  }
}

/**
 * Counts bytes as they pass, for STAT and the transfer log. Past `limit`
 * bytes it fails with QuotaExceeded (552) before passing the chunk that
 * crossed it on, so an upload over a size limit stores nothing.
 */
export function counter(count: (bytes: number) => void, limit = Infinity): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      count(chunk.length);
      total += chunk.length;
      if (total > limit) done(new StorageError('QuotaExceeded', 'file size limit exceeded'));
      else done(null, chunk);
    },
  });
}

/**
 * Resolves once the peer's end of a data connection that reached end-of-file
 * is known: true for a FIN, false for a reset. Node reports a reset that
 * arrives while data is still queued as a plain 'end' (libuv drops the
 * ECONNRESET with POLLHUP); a zero-length write on the TCP socket surfaces
 * it. The socket must be half-open (allowHalfOpen), or Node has already
 * ended our side and the write fails either way. Under TLS, `tcp` is the
 * socket below it.
 */
export function endedCleanly(tcp: Socket): Promise<boolean> {
  if (tcp.destroyed || tcp.errored) return Promise.resolve(false);
  return new Promise((resolve) => tcp.write(EMPTY, (err) => resolve(!err)));
}

/**
 * The body handed to Storage.write for an upload. It tells three moments:
 * `opened` resolves when the storage first reads (drivers validate the
 * target before reading a byte, so the transfer may then answer 150); its
 * end is the end of the client's bytes, when `commit` starts; and
 * `committed()`, the storage's beforePublish gate, says whether they may be
 * published. The storage finishes its own work (fsync, last part) while
 * the commit rule waits, and publishes nothing the client did not finish.
 * Small chunks reach the storage gathered (SMALL_CHUNK_BYTES); those still
 * gathered when the upload fails are not received, for keepPartialUploads.
 */
export class UploadBody extends Transform {
  readonly opened: Promise<void>;
  #open!: () => void;
  /** Small chunks gathered so far (see SMALL_CHUNK_BYTES), and how much of it they fill. */
  #gathered: Buffer | undefined;
  #filled = 0;
  /** Resolves if the upload may be published; set once the data connection exists. */
  commit: () => Promise<void> = () => Promise.reject(new Error('upload not started'));
  #committed: Promise<void> | undefined;

  constructor() {
    super();
    this.opened = new Promise((resolve) => (this.#open = resolve));
    // Errors reach their owners through the write's and the pipeline's promises; an
    // abort before either listens must not become an unhandled 'error'.
    this.on('error', () => {});
  }

  override _read(size: number): void {
    this.#open();
    super._read(size);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    if (chunk.length >= SMALL_CHUNK_BYTES) {
      this.#pushGathered();
      done(null, chunk);
      return;
    }
    if (this.#filled + chunk.length > GATHER_BYTES) this.#pushGathered();
    this.#gathered ??= Buffer.allocUnsafe(GATHER_BYTES);
    this.#filled += chunk.copy(this.#gathered, this.#filled);
    done();
  }

  #pushGathered(): void {
    if (!this.#gathered || this.#filled === 0) return;
    if (this.#filled < GATHER_BYTES / 2) {
      // Mostly empty (small reads between big ones): a copy of what it holds, and the buffer is kept.
      this.push(Buffer.from(this.#gathered.subarray(0, this.#filled)));
    } else {
      this.push(this.#gathered.subarray(0, this.#filled));
      this.#gathered = undefined;
    }
    this.#filled = 0;
  }

  override _flush(done: (err?: Error | null) => void): void {
    this.#pushGathered();
    // The commit rule's window counts from the client's last byte, not from when the storage is done with it.
    this.#committed = this.commit();
    this.#committed.catch(() => {}); // its owner is the storage's gate; unheard if the storage failed first
    done();
  }

  /** The storage's beforePublish gate: resolves if the ended upload may be published, else rejects. */
  committed(): Promise<void> {
    return this.#committed ?? Promise.reject(new Error('upload not finished'));
  }
}

/** Storage drivers throw StorageError; a stream they returned may still fail with anything. */
export function asStorageError(err: unknown): StorageError {
  return err instanceof StorageError ? err : new StorageError('Unavailable', String((err as Error)?.message ?? err), { cause: err });
}
