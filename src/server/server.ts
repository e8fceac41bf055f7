import { createServer, type AddressInfo, type Server } from 'node:net';
import type { Logger } from 'pino';
import type { User } from '../auth/users.js';
import type { Config } from '../config/index.js';
import { Session } from '../session/session.js';
import type { Storage } from '../storage/types.js';

export interface FtpServer {
  /** The bound address and port (port 0 in the config picks a free one). */
  readonly address: AddressInfo;
  /** Stops accepting, ends every session and waits for the listener to close. */
  close(): Promise<void>;
}

/** Starts the control listener; resolves once it is bound. */
export async function startServer(config: Config, storage: Storage, log: Logger): Promise<FtpServer> {
  const users = new Map<string, User>(config.users.map((u) => [u.name, u]));
  const sessions = new Set<Session>();
  const context = { config, storage, users, log };
  const server: Server = createServer((socket) => {
    const session = new Session(socket, context);
    sessions.add(session);
    socket.once('close', () => sessions.delete(session));
    session.start();
  });
  server.on('error', (err) => log.error({ err }, 'control listener error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: config.host, port: config.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  log.info({ event: 'listening', host: address.address, port: address.port, storage: config.storage.kind });
  return {
    address,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) {
        session.transfer?.abort();
        session.close(421, 'Server shutting down.');
      }
      await closed;
    },
  };
}
