import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { plainAddress, type DataChannel } from './channel.js';

export interface PassiveOptions {
  /** Address to listen on: the control connection's local address. */
  host: string;
  range?: { min: number; max: number };
  /** Only this client address may connect (RFC 2577: no data connection theft). */
  clientAddress: string;
  timeoutMs: number;
  log: Logger;
}

export class PassivePortsExhausted extends Error {}

/**
 * Opens a passive listener. It accepts exactly one connection from the
 * client's address, then stops listening; other peers are dropped.
 */
export async function openPassive(options: PassiveOptions): Promise<{ port: number; channel: DataChannel }> {
  const server = await listen(options);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { port, channel: new PassiveChannel(server, options) };
}

async function listen(options: PassiveOptions): Promise<Server> {
  const { range } = options;
  if (!range) return tryListen(options.host, 0);
  const size = range.max - range.min + 1;
  const start = Math.floor(Math.random() * size);
  // Try every port of the range once, starting at a random one.
  for (let i = 0; i < size; i++) {
    const port = range.min + ((start + i) % size);
    try {
      return await tryListen(options.host, port);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new PassivePortsExhausted(`no free passive port in ${range.min}-${range.max}`);
}

function tryListen(host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    // Half-open, so an upload's end can be told from a reset (see endedCleanly).
    const server = createServer({ allowHalfOpen: true });
    server.once('error', reject);
    server.listen({ host, port, exclusive: true, backlog: 4 }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

class PassiveChannel implements DataChannel {
  readonly mode = 'passive';
  #server: Server;
  #socket: Socket | undefined;
  #waiter: ((socket: Socket | Error) => void) | undefined;
  #closed = false;
  /** A listener no transfer command claims within the data timeout is closed: ports are not hoarded. */
  #unclaimed: NodeJS.Timeout | undefined;

  constructor(server: Server, readonly options: PassiveOptions) {
    this.#server = server;
    this.release();
    server.on('connection', (socket) => this.#onConnection(socket));
    server.on('error', (err) => options.log.warn({ err }, 'passive listener error'));
  }

  #onConnection(socket: Socket): void {
    if (socket.remoteAddress === undefined) {
      // Reset before it was accepted: there is no peer to refuse, and the listener waits on.
      socket.destroy();
      return;
    }
    if (this.#socket || plainAddress(socket.remoteAddress) !== plainAddress(this.options.clientAddress)) {
      this.options.log.warn({ peer: socket.remoteAddress }, 'refused passive data connection from another address');
      socket.destroy();
      return;
    }
    this.#socket = socket;
    socket.on('error', () => {}); // surfaced by whoever uses the socket
    this.#server.close();
    this.#waiter?.(socket);
  }

  claim(): boolean {
    clearTimeout(this.#unclaimed);
    this.#unclaimed = undefined;
    return !this.#closed;
  }

  release(): void {
    if (this.#unclaimed || this.#closed) return;
    this.#unclaimed = setTimeout(() => {
      this.options.log.info({ event: 'passive-unclaimed' }, 'closed a passive listener no transfer used');
      this.close();
    }, this.options.timeoutMs);
    this.#unclaimed.unref();
  }

  connect(): Promise<Socket> {
    this.claim();
    if (this.#closed) return Promise.reject(new Error('data channel closed'));
    if (this.#socket) return Promise.resolve(this.#socket);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#waiter?.(new Error('timed out waiting for the data connection')), this.options.timeoutMs);
      this.#waiter = (result) => {
        clearTimeout(timer);
        this.#waiter = undefined;
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#unclaimed);
    this.#server.close();
    this.#socket?.destroy();
    this.#waiter?.(new Error('data channel closed'));
  }
}
