import type { ExternalAuth } from '../auth/external.js';
import type { EventSink } from '../events/sink.js';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { User } from '../auth/users.js';
import { UsersReloader, type UsersReload } from '../auth/users-source.js';
import type { Config } from '../config/index.js';
import { plainAddress } from '../data/channel.js';
import { formatReply, Reply } from '../replies.js';
import { Session, type ServerContext } from '../session/session.js';
import { storageProblem, type Storages } from '../storage/storages.js';
import { AbuseGuard } from './limits.js';
import { Metrics } from './metrics.js';
import { readProxyHeader } from './proxy.js';
import { acceptTls, createTlsContext, sessionContext, type TlsSessionContext } from './tls.js';

/** How often upload leftovers older than the sweep age are looked for. */
const SWEEP_EVERY_MS = 3600_000;
/** How long an implicit-FTPS client has to finish its handshake. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface FtpServer {
  /** The bound address and port of the control listener (port 0 in the config picks a free one). */
  readonly address: AddressInfo;
  /** The implicit-FTPS listener's address, when one is configured. */
  readonly implicitAddress?: AddressInfo;
  /**
   * Stops accepting and ends every session: idle ones at once with 421,
   * those in a transfer when it ends or when `graceMs` runs out, whichever
   * comes first (the transfer is then aborted).
   */
  close(graceMs?: number): Promise<void>;
  /**
   * Re-reads the users file (config.usersFile) and swaps the users in whole,
   * or keeps them and logs why not; `trigger` names the asker in the log line.
   * Logged-in sessions keep the user they logged in as.
   */
  reloadUsers(trigger?: string): Promise<UsersReload>;
}

/** Starts the control listeners; resolves once they are bound. */
export async function startServer(config: Config, storages: Storages, log: Logger, options: { metrics?: Metrics; events?: EventSink; externalAuth?: ExternalAuth } = {}): Promise<FtpServer> {
  // Built once and dropped: a certificate and key that cannot be used together fail the start, not the first AUTH TLS.
  if (config.ftps) createTlsContext(config.ftps);
  const context: ServerContext = {
    config,
    storages,
    sessionsPerUser: new Map(),
    users: new Map<string, User>(config.users.map((u) => [u.name, u])),
    log,
    guard: new AbuseGuard(config.limits),
    metrics: options.metrics ?? new Metrics(),
    events: options.events,
    externalAuth: options.externalAuth,
  };
  const sessions = new Set<Session>();
  // Sessions read context.users at each login and keep the User they got: swapping the map is the whole reload.
  const reloader = config.usersFile
    ? new UsersReloader(config.usersFile, { get: () => context.users, set: (users) => (context.users = users) }, log, (user) =>
        storageProblem(config.storage, user),
      )
    : undefined;

  /**
   * Calls `then` with the client's address: the one in the PROXY header when
   * the listener takes the PROXY protocol (a connection without a valid header
   * is dropped), else the peer's.
   */
  const identify = (socket: Socket, then: (address: string) => void) => {
    const peer = plainAddress(socket.remoteAddress);
    if (!config.proxyProtocol) return then(peer);
    readProxyHeader(socket).then(
      (header) => {
        // LOCAL/UNKNOWN: the load balancer's own connection (a health check).
        const address = header.source ? plainAddress(header.source.address) : peer;
        log.debug({ event: 'proxy-header', client: address, proxy: peer, version: header.version });
        then(address);
      },
      (err: Error) => {
        log.warn({ event: 'proxy-header-refused', proxy: peer, reason: err.message });
        socket.destroy();
      },
    );
  };
  /** Connection caps and lockouts, before any per-session state exists. */
  const admit = (socket: Socket, address: string): string | undefined => {
    const verdict = context.guard.admit(address);
    if (verdict === 'ok') {
      socket.once('close', () => context.guard.release(address));
      return address;
    }
    log.warn({ event: 'connection-refused', client: address, reason: verdict });
    socket.on('error', () => {});
    socket.end(formatReply(Reply.ServiceNotAvailable, verdict === 'locked-out' ? 'Too many failed logins; try later.' : 'Too many connections; try later.'));
    setTimeout(() => socket.destroy(), 1000).unref();
    return undefined;
  };
  const run = (socket: Socket, implicitTls: boolean, clientAddress: string, tlsSession?: TlsSessionContext) => {
    const session = new Session(socket, context, { implicitTls, clientAddress, tlsSession });
    sessions.add(session);
    context.metrics.sessions.inc();
    context.metrics.sessionsTotal.inc();
    socket.once('close', () => {
      sessions.delete(session);
      context.metrics.sessions.dec();
    });
    session.start();
  };

  // Half-open: a client that half-closes after pipelining its commands still gets every reply.
  const server = createServer({ allowHalfOpen: true }, (socket) =>
    identify(socket, (address) => {
      if (admit(socket, address) !== undefined) run(socket, false, address);
    }),
  );
  await listen(server, config.host, config.port);
  let implicit: Server | undefined;
  if (config.ftps?.implicitPort !== undefined) {
    const ftps = config.ftps;
    implicit = createServer({ allowHalfOpen: true }, (socket) =>
      identify(socket, (address) => {
        if (admit(socket, address) === undefined) return;
        socket.on('error', () => {});
        const tlsSession = sessionContext(ftps);
        acceptTls(socket, tlsSession, HANDSHAKE_TIMEOUT_MS).then(
          (secure) => run(secure, true, address, tlsSession),
          (err: Error) => {
            log.info({ event: 'tls-handshake-failed', client: address, reason: err.message });
            socket.destroy();
          },
        );
      }),
    );
    await listen(implicit, config.host, config.ftps.implicitPort);
  }
  // What a crashed server (this one or another on the same storage) left behind.
  const sweep = () =>
    // The server's own root only: extra buckets (and S3_BUCKET above S3_PREFIX) may hold other
    // writers' uploads; their leftovers are the bucket's lifecycle rule's (README, Storage mappings).
    storages.main.sweep(config.sweepAgeMs).then(
      ({ removed }) => removed > 0 && log.info({ event: 'sweep', removed }),
      (err: unknown) => log.warn({ err }, 'sweep of upload leftovers failed'),
    );
  void sweep();
  const sweeper = setInterval(sweep, SWEEP_EVERY_MS).unref();
  reloader?.start();
  const address = server.address() as AddressInfo;
  const implicitAddress = implicit?.address() as AddressInfo | undefined;
  log.info({
    event: 'listening',
    host: address.address,
    port: address.port,
    implicitTlsPort: implicitAddress?.port,
    storage: config.storage.kind,
    ftps: config.ftps !== undefined,
    proxyProtocol: config.proxyProtocol === true,
  });
  return {
    address,
    implicitAddress,
    async reloadUsers(trigger = 'reloadUsers()') {
      if (reloader) return reloader.reload(trigger);
      log.info({ event: 'users-reload', trigger, outcome: 'no-file' }, 'no users file to re-read: FTP_USERS_JSON and FTP_USER are read at start only');
      return { outcome: 'no-file' };
    },
    async close(graceMs = 0) {
      clearInterval(sweeper);
      reloader?.stop();
      const closed = Promise.all([server, implicit].map((s) => (s ? new Promise((r) => s.close(r)) : undefined)));
      await Promise.all([...sessions].map((session) => session.shutdown(graceMs)));
      await closed;
    },
  };
}

async function listen(server: Server, host: string, port: number): Promise<void> {
  server.listen({ host, port });
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
  server.on('error', () => {});
}
