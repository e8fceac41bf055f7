import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Storage } from '../storage/types.js';
import { METRICS_CONTENT_TYPE, type Metrics } from './metrics.js';

/** A readiness probe waits this long for the storage before answering 503. */
const READY_TIMEOUT_MS = 5000;
/** Probes and scrapes need a few connections; more are refused, so a flood cannot hold memory. */
const MAX_CONNECTIONS = 32;
/** Requests one connection may send (this does not bound a pipeline that never reads: see SECURITY.md). */
const MAX_REQUESTS_PER_SOCKET = 100;

export interface HealthOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  storage: Storage;
  metrics: Metrics;
  log: Logger;
}

export interface HealthServer {
  readonly address: AddressInfo;
  /** From now on /readyz answers 503, so a load balancer stops sending new clients (shutdown). */
  drain(): void;
  close(): Promise<void>;
}

/**
 * The HTTP side port for orchestrators and Prometheus: /healthz (the process
 * answers), /readyz (the storage answers too, and the server is not draining)
 * and /metrics. Plain node:http; anything else is 404, anything but GET/HEAD 405.
 */
export async function startHealthServer(options: HealthOptions): Promise<HealthServer> {
  const { storage, metrics, log } = options;
  let draining = false;
  // Concurrent probes share one storage check rather than each sending its own.
  let inFlight: Promise<void> | undefined;
  const ping = () => {
    inFlight ??= withTimeout(storage.ping(), READY_TIMEOUT_MS).finally(() => (inFlight = undefined));
    return inFlight;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    }
    switch (path) {
      case '/healthz':
        return send(res, 200, 'ok\n');
      case '/readyz':
        if (draining) return send(res, 503, 'draining\n');
        try {
          await ping();
          return send(res, 200, 'ready\n');
        } catch (err) {
          log.warn({ event: 'not-ready', reason: (err as Error).message });
          return send(res, 503, `storage unavailable: ${(err as Error).message}\n`);
        }
      case '/metrics':
        return send(res, 200, metrics.render(), { 'Content-Type': METRICS_CONTENT_TYPE });
      default:
        return send(res, 404, 'not found\n');
    }
  };

  // Timeouts are checked every second (Node's default, 30 s, let an idle or slowloris client stay that long).
  const server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'health endpoint failed');
      if (!res.headersSent) send(res, 500, 'internal error\n');
    });
  });
  // Probes are short; a slow or idle client must not hold a socket for long.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = MAX_CONNECTIONS;
  server.maxRequestsPerSocket = MAX_REQUESTS_PER_SOCKET;
  server.listen({ host: options.host, port: options.port });
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
  const address = server.address() as AddressInfo;
  log.info({ event: 'health-listening', host: address.address, port: address.port });
  return {
    address,
    drain: () => void (draining = true),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
