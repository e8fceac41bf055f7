import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type CreateMultipartUploadCommandInput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { MultipartAborts } from './s3-aborts.js';

/** S3's smallest part, except for the last part of an upload. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** S3's largest part. */
const MAX_PART_BYTES = 5 * 1024 ** 3;
const MAX_PARTS = 10_000;
/** Parallel UploadPartCopy calls within one object: they cost S3 work, not our memory. */
const PART_COPY_CONCURRENCY = 8;
/** Smallest copied part: copies hold no buffer here, so big parts only save requests. */
const MIN_COPY_PART_BYTES = 64 * 1024 * 1024;
/**
 * Streamed bytes are held as they came until the write reaches this size; a
 * small file never gets a part buffer. Past it, each chunk is copied into the
 * part being filled as it arrives, so the chunk dies young: held for a whole
 * part, chunks outlive young-generation collections, and V8 frees them only
 * in full ones (dozens per GiB).
 */
const HOLD_BYTES = 1024 * 1024;

export interface MultipartWriterOptions {
  /** Creates, completes and puts: short metadata requests. */
  client: S3Client;
  /** Sends the part uploads (long, body-carrying requests); defaults to `client`. */
  transferClient?: S3Client;
  /** Sends the part copies (UploadPartCopy); defaults to `client`. */
  copyClient?: S3Client;
  /**
   * The session's signal: once aborted, finish() publishes nothing. It is
   * checked right before the publishing request, the last moment we can still
   * take the write back. publishReceived() ignores it (keepPartialUploads).
   */
  signal?: AbortSignal;
  /**
   * The version of the object an APPE or REST + STOR builds on: its ETag
   * (If-Match), or none there (If-None-Match: *). The object is published only
   * if the key still holds that version, so a concurrent change (another
   * append) fails the write instead of being overwritten and lost.
   */
  base?: { IfMatch: string } | { IfNoneMatch: '*' };
  /**
   * Asked after a publishing request (PutObject, CompleteMultipartUpload)
   * failed: the object's ETag if the key holds this very write all the same,
   * else undefined; it throws when it cannot tell (that error then replaces
   * the request's). S3 may have done the work and its answer been lost to a
   * timeout or a reset; the SDK's retry then fails (412 for a conditional
   * write, NoSuchUpload for a completed upload) although the write landed.
   */
  landed?: () => Promise<string | undefined>;
  /** Told the upload id once the multipart upload exists, and when it is gone (completed or aborted). */
  onUpload?: (uploadId: string, open: boolean) => void;
  bucket: string;
  key: string;
  /** Size of every streamed part but the last. */
  partSize: number;
  /** Streamed parts uploading at once; memory is about partSize × (queueSize + 1). */
  queueSize: number;
  /** Headers of the new object (Metadata already S3-safe, ContentType, …). */
  create?: Omit<CreateMultipartUploadCommandInput, 'Bucket' | 'Key'>;
  /** Removes a multipart upload, now or once the storage is reachable again. */
  aborts: MultipartAborts;
}

/** How a finished write was stored: one PutObject, or a completed multipart upload. */
export interface Finished {
  etag: string | undefined;
  multipart: boolean;
}

/**
 * Builds one object from server-side copies of another object's byte ranges
 * followed by streamed bytes. lib-storage's Upload cannot start with copied
 * parts, hence this writer. The multipart upload is created lazily: an object
 * that ends up smaller than one part becomes a single PutObject.
 *
 * Nothing is visible until finish() (or publishReceived()); on any failure the
 * caller calls abort() or publishReceived().
 */
export class MultipartWriter {
  readonly #o: MultipartWriterOptions;
  /** Cancels in-flight part uploads when the write is given up. */
  readonly #cancel = new AbortController();
  #uploadId: Promise<string> | undefined;
  #nextPart = 1;
  readonly #parts = new Map<number, { etag: string | undefined; bytes: number }>();
  readonly #inFlight = new Set<Promise<void>>();
  #failure: { part: number; err: unknown } | undefined;
  /** Chunks as they came, until the write outgrows HOLD_BYTES. */
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** Past HOLD_BYTES: the part being filled, and how much of it is. */
  #part: Buffer | undefined;
  #filled = 0;
  #copying = false;
  /** Full-size part buffers whose upload is done, for the next parts: no new 8 MiB per part. */
  readonly #spare: Buffer[] = [];
  /** Set by publishReceived(): publishing what was received is the point, aborted or not. */
  #partial = false;

  constructor(options: MultipartWriterOptions) {
    this.#o = options;
  }

  /**
   * Appends [0, size) of `copySource` as server-side copies, each at least 5 MiB
   * (only a last part may be smaller, and copied parts are never last unless
   * nothing follows). CopySourceIfMatch makes a concurrent change of the source
   * fail the write instead of splicing two versions.
   */
  async copyRange(copySource: string, size: number, etag: string | undefined): Promise<void> {
    const uploadId = await this.#open();
    const ranges = copyRanges(size, Math.max(this.#o.partSize, MIN_COPY_PART_BYTES));
    const numbered = ranges.map((r) => ({ ...r, number: this.#nextPart++ }));
    // Nothing has been received yet: an ended session stops the copies at once (the caller then aborts).
    const signal = this.#o.signal ? AbortSignal.any([this.#cancel.signal, this.#o.signal]) : this.#cancel.signal;
    await mapLimit(numbered, PART_COPY_CONCURRENCY, async ({ number, start, end }) => {
      const out = await (this.#o.copyClient ?? this.#o.client).send(
        new UploadPartCopyCommand({
          Bucket: this.#o.bucket,
          Key: this.#o.key,
          UploadId: uploadId,
          PartNumber: number,
          CopySource: copySource,
          CopySourceRange: `bytes=${start}-${end - 1}`,
          CopySourceIfMatch: etag,
        }),
        { abortSignal: signal },
      );
      this.#parts.set(number, { etag: out.CopyPartResult?.ETag, bytes: end - start });
    });
  }

  /** Takes streamed bytes; resolves once they are buffered, waiting while the queue is full (backpressure). */
  async push(chunk: Buffer): Promise<void> {
    this.#throwIfFailed();
    if (!this.#copying && this.#heldBytes + chunk.length < HOLD_BYTES) {
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
      return;
    }
    this.#copying = true;
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    for (const c of held) await this.#copyIn(c);
    await this.#copyIn(chunk);
  }

  /** Copies a chunk into the part being filled; a full part starts uploading once the queue has room. */
  async #copyIn(chunk: Buffer): Promise<void> {
    for (let at = 0; at < chunk.length; ) {
      const part = (this.#part ??= this.#spare.pop() ?? Buffer.allocUnsafeSlow(this.#o.partSize));
      const copied = chunk.copy(part, this.#filled, at);
      at += copied;
      this.#filled += copied;
      if (this.#filled < part.length) continue;
      while (this.#inFlight.size >= this.#o.queueSize) await Promise.race(this.#inFlight);
      this.#throwIfFailed();
      this.#part = undefined;
      this.#filled = 0;
      this.#startPart(part);
    }
  }

  /** Bytes received and not yet in a started part. */
  get #bufferedBytes(): number {
    return this.#heldBytes + this.#filled;
  }

  /** Those bytes as one buffer, taken: none are buffered afterwards. */
  #takeBuffered(): Buffer {
    const body = this.#part ? this.#part.subarray(0, this.#filled) : this.#held.length === 1 ? (this.#held[0] as Buffer) : Buffer.concat(this.#held);
    this.#held = [];
    this.#heldBytes = 0;
    this.#part = undefined;
    this.#filled = 0;
    return body;
  }

  /**
   * Stores the object. `putMetadata` replaces the metadata when the object fits
   * in one PutObject (it may then carry values known only at the end, such as a hash).
   * `beforePublish` is awaited right before the publishing request, while the
   * last part uploads; if it rejects, nothing is published and finish rejects.
   */
  async finish(putMetadata?: Record<string, string>, beforePublish?: () => Promise<void>): Promise<Finished> {
    if (!this.#uploadId) {
      await beforePublish?.();
      this.#throwIfAborted();
      const body = this.#takeBuffered();
      const etag = await this.#publish(async () => {
        const out = await this.#o.client.send(
          new PutObjectCommand({
            ...this.#o.create,
            Metadata: putMetadata ?? this.#o.create?.Metadata,
            Bucket: this.#o.bucket,
            Key: this.#o.key,
            Body: body,
            ...this.#o.base,
          }),
          { abortSignal: this.#cancel.signal },
        );
        return out.ETag;
      });
      return { etag, multipart: false };
    }
    if (this.#bufferedBytes > 0) this.#startPart(this.#takeBuffered());
    // The parts settle (a failure is recorded, never thrown) while the gate decides.
    await Promise.all([beforePublish?.(), Promise.all(this.#inFlight)]);
    // Right after the last part's reply: one loop turn reads what else had arrived (a close, an ABOR).
    await nextTurn();
    this.#throwIfFailed();
    this.#throwIfAborted();
    return { etag: await this.#complete([...this.#parts.keys()].sort((x, y) => x - y)), multipart: true };
  }

  /**
   * After a failure: publishes the bytes received so far, in order. Parts after
   * a failed part cannot be used (they would leave a gap), nor can the buffered
   * rest then. Returns the bytes published; 0 means nothing was published.
   */
  async publishReceived(): Promise<number> {
    this.#partial = true;
    await Promise.allSettled(this.#inFlight);
    if (!this.#uploadId) {
      // Everything received is still buffered: one PutObject, or nothing at all.
      const bytes = this.#bufferedBytes;
      if (bytes > 0) await this.finish();
      return bytes;
    }
    if (!this.#failure && this.#bufferedBytes > 0) {
      this.#startPart(this.#takeBuffered());
      await Promise.allSettled(this.#inFlight);
    }
    const usable: number[] = [];
    for (let n = 1; this.#parts.has(n) && n < (this.#failure?.part ?? Infinity); n++) usable.push(n);
    if (usable.length === 0) {
      await this.abort();
      return 0;
    }
    await this.#complete(usable);
    return usable.reduce((sum, n) => sum + (this.#parts.get(n)?.bytes ?? 0), 0);
  }

  /** Cancels what is in flight and removes the multipart upload, if one was started. */
  async abort(): Promise<void> {
    this.#cancel.abort();
    await Promise.allSettled(this.#inFlight);
    this.#takeBuffered();
    const uploadId = await this.#uploadId?.catch(() => undefined);
    if (uploadId === undefined) return;
    await this.#o.aborts.abort(this.#o.key, uploadId);
    this.#o.onUpload?.(uploadId, false);
  }

  #open(): Promise<string> {
    this.#uploadId ??= this.#o.client
      .send(new CreateMultipartUploadCommand({ ...this.#o.create, Bucket: this.#o.bucket, Key: this.#o.key }))
      .then((out) => {
        const uploadId = out.UploadId ?? '';
        this.#o.onUpload?.(uploadId, true);
        return uploadId;
      });
    return this.#uploadId;
  }

  #startPart(body: Buffer): void {
    // S3 would refuse the part with a generic 400; say what it is (the driver answers QuotaExceeded).
    if (this.#nextPart > MAX_PARTS) throw new Error(`Exceeded ${MAX_PARTS} parts: the upload is larger than partSize × ${MAX_PARTS}`);
    const number = this.#nextPart++;
    const task = this.#open()
      .then((uploadId) =>
        (this.#o.transferClient ?? this.#o.client).send(
          new UploadPartCommand({ Bucket: this.#o.bucket, Key: this.#o.key, UploadId: uploadId, PartNumber: number, Body: body }),
          { abortSignal: this.#cancel.signal },
        ),
      )
      .then(
        (out) => {
          this.#parts.set(number, { etag: out.ETag, bytes: body.length });
          // Sent and answered: the SDK holds it no more (a failed part's buffer is left to the GC).
          if (body.length === this.#o.partSize) this.#spare.push(body);
        },
        (err: unknown) => {
          if (!this.#failure || number < this.#failure.part) this.#failure = { part: number, err };
        },
      )
      .finally(() => this.#inFlight.delete(task));
    this.#inFlight.add(task);
  }

  async #complete(numbers: number[]): Promise<string | undefined> {
    const uploadId = await this.#open();
    const parts: CompletedPart[] = numbers.map((n) => ({ PartNumber: n, ETag: this.#parts.get(n)?.etag }));
    const etag = await this.#publish(async () => {
      const out = await this.#o.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.#o.bucket, Key: this.#o.key, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...this.#o.base }),
      );
      return out.ETag;
    });
    this.#o.onUpload?.(uploadId, false);
    return etag;
  }

  /** Sends a publishing request; if it fails, asks `landed` whether it took effect anyway. */
  async #publish(send: () => Promise<string | undefined>): Promise<string | undefined> {
    try {
      return await send();
    } catch (err) {
      const etag = await this.#o.landed?.();
      if (etag === undefined) throw err;
      return etag;
    }
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure.err;
  }

  #throwIfAborted(): void {
    const signal = this.#o.signal;
    if (signal?.aborted && !this.#partial) throw Object.assign(new Error('aborted before publishing', { cause: signal.reason }), { name: 'AbortError' });
  }
}

/**
 * Splits [0, size) into ranges for UploadPartCopy: as many as fit at least
 * `partSize` bytes each (so every one is ≥ 5 MiB), the remainder spread over
 * them, never above S3's 5 GiB part limit, and using at most half of the
 * 10,000 part numbers so the streamed bytes that follow still have room.
 */
export function copyRanges(size: number, partSize: number): Array<{ start: number; end: number }> {
  if (size <= 0) return [];
  const wanted = Math.max(partSize, Math.ceil(size / (MAX_PARTS / 2)));
  const count = Math.max(1, Math.floor(size / wanted), Math.ceil(size / MAX_PART_BYTES));
  const base = Math.floor(size / count);
  const ranges: Array<{ start: number; end: number }> = [];
  for (let i = 0, start = 0; i < count; i++) {
    const end = i === count - 1 ? size : start + base;
    ranges.push({ start, end });
    start = end;
  }
  return ranges;
}

/** Maps items with at most `limit` calls in flight; results keep the input order. Stops starting new ones after a failure. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const workers = Array.from({ length: Math.min(limit, items.length) }, worker);
  const settled = await Promise.allSettled(workers);
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}
