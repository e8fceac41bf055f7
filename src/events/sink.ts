import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { EventsConfig } from './config.js';
import { describeUrl } from './endpoint.js';
import { signatureHeaders } from './signature.js';
import type { EventCounter, EventKind, FileEvent, FileEventInput } from './types.js';

type Attempt = 'ok' | 'retry' | 'fatal';

export interface EventSinkOptions {
  log: Logger;
  /** Called once per outcome with how many events it concerned; wire to a Counter. */
  count?: EventCounter;
  /** For tests: a fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/**
 * Delivers file events to EVENTS_URL, at least once, without ever making an
 * FTP command wait: emit() only queues.
 *
 * The queue is bounded and drops the NEWEST event when full: an event that
 * was accepted stays until it is delivered or given up, and the one refused
 * is logged in full at the moment it happens, so the log is the record to
 * replay from. Retries use exponential backoff with full jitter, so a
 * receiver coming back is not hit by every instance at once; 408, 429, 5xx,
 * timeouts and network errors are retried, other answers (redirects too) are
 * final. Each attempt is signed afresh, so its timestamp stays within the
 * receiver's replay window however late it is.
 */
export class EventSink {
  readonly #config: EventsConfig;
  readonly #log: Logger;
  readonly #count: EventCounter;
  readonly #fetch: typeof fetch;
  readonly #queue: FileEvent[] = [];
  /** Aborts in-flight POSTs and backoff sleeps when close() runs out of grace. */
  readonly #stop = new AbortController();
  #active = 0;
  #abandoned = 0;
  #closing = false;
  #onIdle: (() => void) | undefined;

  constructor(config: EventsConfig, options: EventSinkOptions) {
    this.#config = config;
    this.#log = options.log.child({ component: 'events' });
    const count = options.count ?? (() => {});
    // A metrics callback that throws must not stop deliveries.
    this.#count = (outcome, n) => {
      try {
        count(outcome, n);
      } catch {}
    };
    this.#fetch = options.fetch ?? fetch;
  }

  /** Whether events of this kind are configured to be sent; callers may skip building them otherwise. */
  wants(kind: EventKind): boolean {
    return this.#config.kinds.has(kind);
  }

  /**
   * Queues one event; returns whether it was queued. Never throws and never
   * waits: a kind not configured, a full queue or a closing sink is answered false.
   */
  emit(input: FileEventInput): boolean {
    if (!this.wants(input.kind)) return false;
    const event: FileEvent = { id: randomUUID(), ...input, time: input.time ?? new Date().toISOString() };
    if (this.#closing) {
      this.#drop('dropped_shutdown', event);
      return false;
    }
    if (this.#queue.length >= this.#config.queueSize) {
      this.#drop('dropped_overflow', event);
      return false;
    }
    this.#queue.push(event);
    this.#pump();
    return true;
  }

  /** Events waiting and being delivered now (for /metrics gauges and tests). */
  get pending(): { queued: number; inFlight: number } {
    return { queued: this.#queue.length, inFlight: this.#active };
  }

  /**
   * Stops taking events and waits up to `graceMs` for the queue to drain.
   * What is still queued or in flight then is abandoned: each event is
   * counted as dropped_shutdown and logged in full; resolves with how many.
   */
  async close(graceMs: number): Promise<{ dropped: number }> {
    this.#closing = true;
    if (!this.#idle()) {
      const drained = new Promise<void>((resolve) => (this.#onIdle = resolve));
      const timer = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([drained, timer]);
    }
    if (!this.#idle()) {
      for (const event of this.#queue.splice(0)) this.#abandon(event);
      const settled = new Promise<void>((resolve) => (this.#onIdle = resolve));
      this.#stop.abort();
      // Aborted POSTs and sleeps settle within a tick or two, each abandoning its event.
      await settled;
    }
    const dropped = this.#abandoned;
    if (dropped > 0) this.#log.error({ event: 'events-dropped', reason: 'shutdown', dropped, graceMs }, 'events not delivered before shutdown');
    return { dropped };
  }

  #idle(): boolean {
    return this.#queue.length === 0 && this.#active === 0;
  }

  #drop(outcome: 'dropped_overflow' | 'dropped_shutdown', event: FileEvent): void {
    this.#count(outcome, 1);
    // The whole event, so an operator can replay it from the log.
    this.#log.warn({ event: 'event-dropped', reason: outcome, dropped: event }, 'event not queued');
  }

  /** An accepted event that shutdown ends before delivery: logged whole, to be replayed. */
  #abandon(event: FileEvent): void {
    this.#abandoned++;
    this.#count('dropped_shutdown', 1);
    this.#log.error({ event: 'event-dropped', reason: 'dropped_shutdown', dropped: event }, 'event not delivered before shutdown');
  }

  #pump(): void {
    while (this.#active < this.#config.concurrency && this.#queue.length > 0 && !this.#stop.signal.aborted) {
      const event = this.#queue.shift()!;
      this.#active++;
      // Every promise here has an owner: an unhandled rejection would end every session.
      void this.#deliver(event)
        .catch((err: unknown) => this.#log.error({ err, event: 'event-bug' }, 'event delivery failed unexpectedly'))
        .finally(() => {
          this.#active--;
          this.#pump();
          if (this.#idle()) this.#onIdle?.();
        });
    }
  }

  async #deliver(event: FileEvent): Promise<void> {
    const body = JSON.stringify(event);
    const { maxAttempts, backoffBaseMs, backoffMaxMs } = this.#config;
    for (let attempt = 1; ; attempt++) {
      const result = await this.#post(body, event, attempt);
      if (this.#stop.signal.aborted) {
        this.#abandon(event);
        return;
      }
      if (result === 'ok') {
        this.#count('delivered', 1);
        return;
      }
      if (result === 'fatal' || attempt >= maxAttempts) {
        this.#count('failed', 1);
        this.#log.error({ event: 'event-failed', attempts: attempt, failed: event }, 'event given up');
        return;
      }
      this.#count('retried', 1);
      const ceiling = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (attempt - 1));
      try {
        await sleep(Math.random() * ceiling, undefined, { signal: this.#stop.signal });
      } catch {
        this.#abandon(event);
        return;
      }
    }
  }

  async #post(body: string, event: FileEvent, attempt: number): Promise<Attempt> {
    const { url, secret, timeoutMs } = this.#config;
    const started = Date.now();
    try {
      const response = await this.#fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 's3ftp-events',
          ...(secret ? signatureHeaders(secret, body) : {}),
        },
        body,
        // A redirect could lead to plain http elsewhere, which EVENTS_URL validation refused:
        // it is not followed, and its 3xx is a final answer like any other that is not retried.
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), this.#stop.signal]),
      });
      // The answer's body is not read; cancelling it frees the connection.
      await response.body?.cancel().catch(() => {});
      if (response.ok) return 'ok';
      const retry = response.status === 408 || response.status === 429 || response.status >= 500;
      this.#log.warn({ event: 'event-attempt-failed', id: event.id, attempt, status: response.status, url: describeUrl(url) });
      return retry ? 'retry' : 'fatal';
    } catch (err) {
      if (!this.#stop.signal.aborted) {
        const timedOut = (err as Error).name === 'TimeoutError';
        this.#log.warn({
          event: 'event-attempt-failed',
          id: event.id,
          attempt,
          error: timedOut ? `no answer within ${timeoutMs} ms` : describeError(err),
          ms: Date.now() - started,
          url: describeUrl(url),
        });
      }
      return 'retry';
    }
  }
}

/** fetch() says only "fetch failed"; the cause (ECONNREFUSED, a TLS error) is what an operator needs. */
export function describeError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message;
  return detail ? `${(err as Error).message}: ${detail}` : String((err as Error).message ?? err);
}
