import { AbortMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';

/** How often uploads whose abort failed are tried again. */
const DEFAULT_RETRY_MS = 15_000;
/**
 * How long the first try may take, while a transfer's final reply waits for
 * it: a storage that stalls is tried again in the background instead.
 */
const FIRST_TRY_MS = 5000;
/** Aborts kept for retry; past this the oldest is left to the bucket's lifecycle rule. */
const MAX_PENDING = 10_000;
/** After this long the bucket's lifecycle rule (1 day in infra/) is the better janitor. */
const GIVE_UP_MS = 6 * 60 * 60 * 1000;

/**
 * Aborts multipart uploads, and keeps trying those it could not abort (the
 * storage was unreachable when the transfer failed) until the storage is
 * back. An upload left behind costs storage and is invisible to listings, so
 * nothing else would ever notice it.
 */
export class MultipartAborts {
  readonly #pending = new Map<string, { key: string; uploadId: string; since: number }>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly logger: Logger | undefined,
    private readonly retryMs = DEFAULT_RETRY_MS,
  ) {}

  /** Uploads waiting for a retry. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Aborts an upload; when that fails, remembers it and tries again later. Never throws. */
  async abort(key: string, uploadId: string): Promise<void> {
    if (await this.#try(key, uploadId, AbortSignal.timeout(FIRST_TRY_MS))) return;
    if (this.#closed) return;
    if (this.#pending.size >= MAX_PENDING) {
      const [oldest] = this.#pending.keys();
      this.#pending.delete(oldest!);
    }
    this.#pending.set(uploadId, { key, uploadId, since: Date.now() });
    this.logger?.warn({ event: 'abort-deferred', key, uploadId }, 'could not abort a multipart upload; will retry');
    this.#schedule();
  }

  /** Stops retrying; what is still pending is left to the bucket's lifecycle rule. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    if (this.#pending.size > 0) {
      this.logger?.warn({ event: 'abort-abandoned', uploads: [...this.#pending.values()].map((u) => u.key) });
    }
  }

  #schedule(): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setTimeout(() => void this.#retry(), this.retryMs);
    this.#timer.unref();
  }

  async #retry(): Promise<void> {
    this.#timer = undefined;
    for (const { key, uploadId, since } of [...this.#pending.values()]) {
      if (this.#closed) return;
      if (await this.#try(key, uploadId)) {
        this.#pending.delete(uploadId);
        this.logger?.info({ event: 'abort-retried', key, uploadId });
      } else if (Date.now() - since > GIVE_UP_MS) {
        this.#pending.delete(uploadId);
        this.logger?.warn({ event: 'abort-abandoned', key, uploadId });
      } else {
        break; // still unreachable: wait for the next round
      }
    }
    if (this.#pending.size > 0) this.#schedule();
  }

  /** True when the upload is gone (aborted now, or already). */
  async #try(key: string, uploadId: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), { abortSignal: signal });
      return true;
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchUpload') return true;
      this.logger?.debug({ err, key, uploadId }, 'abort multipart upload failed');
      return false;
    }
  }
}
