import { ConfigError, int, type Env } from '../config/env.js';
import { isLoopbackHost, parseHookUrl } from './endpoint.js';
import { EVENT_KINDS, type EventKind } from './types.js';

export interface EventsConfig {
  url: URL;
  /** Signs every body (X-S3ftp-Signature); absent means unsigned, which the README advises against. */
  secret?: string;
  kinds: ReadonlySet<EventKind>;
  /** Deadline of one POST, headers and all. */
  timeoutMs: number;
  /** Tries per event, the first included. */
  maxAttempts: number;
  /** Events waiting for delivery; beyond it new events are dropped (and counted, and logged). */
  queueSize: number;
  /** POSTs in flight at once. */
  concurrency: number;
  /** Backoff before retry n is a random time in [0, min(maxMs, baseMs × 2^(n-1))] ("full jitter"). */
  backoffBaseMs: number;
  backoffMaxMs: number;
}


/**
 * Reads EVENTS_* variables; undefined when EVENTS_URL is not set. Throws
 * ConfigError naming the variable at fault.
 */
export function loadEventsConfig(env: Env = process.env): EventsConfig | undefined {
  const raw = env.EVENTS_URL?.trim();
  if (!raw) {
    for (const name of ['EVENTS_SECRET', 'EVENTS_KINDS']) {
      if (env[name]?.trim()) throw new ConfigError(`${name}: needs EVENTS_URL`);
    }
    return undefined;
  }
  const secret = env.EVENTS_SECRET;
  if (secret !== undefined && secret !== '' && Buffer.byteLength(secret) < 16) {
    throw new ConfigError('EVENTS_SECRET: must be at least 16 bytes (e.g. "openssl rand -hex 32")');
  }
  const url = parseHookUrl('EVENTS_URL', raw);
  // Unsigned events leave the network free to forge uploads the receiver then acts on; only loopback may skip it.
  if (!secret && !isLoopbackHost(url.hostname)) {
    throw new ConfigError('EVENTS_SECRET: must be set when EVENTS_URL is not a loopback address');
  }
  return {
    url,
    secret: secret || undefined,
    kinds: parseKinds(env.EVENTS_KINDS),
    timeoutMs: int(env, 'EVENTS_TIMEOUT', 10, 1, 300) * 1000,
    maxAttempts: int(env, 'EVENTS_MAX_ATTEMPTS', 6, 1, 100),
    queueSize: int(env, 'EVENTS_QUEUE_SIZE', 10000, 1, 1_000_000),
    concurrency: int(env, 'EVENTS_CONCURRENCY', 4, 1, 64),
    backoffBaseMs: 500,
    backoffMaxMs: 60_000,
  };
}

function parseKinds(raw: string | undefined): ReadonlySet<EventKind> {
  const kinds = new Set<EventKind>(['upload']);
  for (const word of (raw ?? '').split(',').map((w) => w.trim().toLowerCase()).filter(Boolean)) {
    if (!(EVENT_KINDS as readonly string[]).includes(word)) {
      throw new ConfigError(`EVENTS_KINDS: "${word}" is not one of ${EVENT_KINDS.join(', ')}`);
    }
    kinds.add(word as EventKind);
  }
  return kinds;
}

