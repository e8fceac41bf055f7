import { Transform, type TransformCallback } from 'node:stream';
import { ConfigError } from '../config/env.js';

/** Smallest slice a chunk is cut into, so a slow limit does not mean one timer per few bytes. */
const MIN_SLICE_BYTES = 512;

/**
 * A token bucket that lends: reserve(n) takes n tokens at once, going into
 * debt if it must, and says how long until the debt is paid. Callers wait
 * that long before sending, so the rate holds and waiters queue in the order
 * they asked, which makes one bucket fair to share between streams (one per
 * user, or one for the whole server).
 */
export class TokenBucket {
  readonly bytesPerSecond: number;
  /** Bytes that may pass at once after a pause; also the size chunks are cut into. */
  readonly burstBytes: number;
  #tokens: number;
  #last: number;

  constructor(bytesPerSecond: number, burstBytes?: number) {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) throw new RangeError('bytesPerSecond must be above 0');
    this.bytesPerSecond = bytesPerSecond;
    // A tenth of a second's worth: smooth to the eye, and few enough timers.
    this.burstBytes = Math.max(MIN_SLICE_BYTES, Math.ceil(burstBytes ?? bytesPerSecond / 10));
    this.#tokens = this.burstBytes;
    this.#last = performance.now();
  }

  /** Takes `bytes` tokens now; returns the ms to wait before using them (0 when they were there). */
  reserve(bytes: number): number {
    const now = performance.now();
    this.#tokens = Math.min(this.burstBytes, this.#tokens + ((now - this.#last) * this.bytesPerSecond) / 1000);
    this.#last = now;
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : (-this.#tokens * 1000) / this.bytesPerSecond;
  }
}

/**
 * A pass-through that holds throughput to a rate, in either direction
 * (socket → storage for uploads, storage → socket for downloads). Chunks are
 * cut with subarray (views, no copies) into burst-sized slices, each sent
 * once the bucket allows; between slices it waits on one timer, never
 * spinning. Backpressure is the stream's own: the next chunk is taken only
 * when this one is through. destroy() (pipeline's abort, a closed socket)
 * clears the timer at once, so an aborted transfer ends without waiting for
 * its next slice.
 */
export class Throttle extends Transform {
  readonly #bucket: TokenBucket;
  #timer: NodeJS.Timeout | undefined;

  /** `limit`: bytes per second for this stream alone, or a bucket shared with others. */
  constructor(limit: number | TokenBucket) {
    super();
    this.#bucket = typeof limit === 'number' ? new TokenBucket(limit) : limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#send(chunk, 0, done);
  }

  #send(chunk: Buffer, offset: number, done: TransformCallback): void {
    const sliceBytes = this.#bucket.burstBytes;
    while (offset < chunk.length) {
      const slice = chunk.subarray(offset, offset + sliceBytes);
      offset += slice.length;
      const wait = this.#bucket.reserve(slice.length);
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          if (this.destroyed) return;
          this.push(slice);
          this.#send(chunk, offset, done);
        }, wait);
        return;
      }
      this.push(slice);
    }
    done();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    callback(error);
  }
}

/** Per-transfer limits in bytes per second; undefined means unlimited. */
export interface BandwidthConfig {
  uploadBytesPerSecond?: number;
  downloadBytesPerSecond?: number;
}

/** Reads FTP_UPLOAD_KIBPS and FTP_DOWNLOAD_KIBPS (KiB/s per transfer, 0 or unset = unlimited). */
export function loadBandwidthConfig(env: Record<string, string | undefined> = process.env): BandwidthConfig {
  const read = (name: string): number | undefined => {
    const raw = env[name]?.trim();
    if (!raw) return undefined;
    if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}: "${raw}" is not a whole number of KiB/s`);
    const value = Number(raw);
    if (value > 10_485_760) throw new ConfigError(`${name}: ${value} is above 10485760 (10 GiB/s)`);
    return value === 0 ? undefined : value * 1024;
  };
  return { uploadBytesPerSecond: read('FTP_UPLOAD_KIBPS'), downloadBytesPerSecond: read('FTP_DOWNLOAD_KIBPS') };
}
