import { isIP } from 'node:net';
import { ConfigError } from '../config/env.js';

/**
 * Whether a URL's host is this machine: only then may a hook speak plain
 * HTTP, since nothing on the network can read or change what it carries.
 * 'localhost' is accepted by name because every resolver we run on maps it
 * to loopback; any other name could resolve anywhere.
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./.test(host);
  return false;
}

/**
 * Parses the URL of an outbound hook (events receiver, identity provider).
 * Throws ConfigError naming `variable` unless it is HTTPS, or HTTP to a
 * loopback address; URLs carrying credentials are refused, since they would
 * end up in logs and process listings: use the *_SECRET variable instead.
 */
export function parseHookUrl(variable: string, raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${variable}: "${raw}" is not a URL`);
  }
  if (url.username || url.password) throw new ConfigError(`${variable}: must not carry credentials (user:password@)`);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return url;
  if (url.protocol === 'http:') {
    throw new ConfigError(`${variable}: plain http is only allowed to a loopback address; use https`);
  }
  throw new ConfigError(`${variable}: "${url.protocol}" is not http(s)`);
}

/** What a hook URL may show in logs: scheme, host and path, never a query (it may hold a token). */
export function describeUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}
