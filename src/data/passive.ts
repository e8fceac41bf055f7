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
  const listener = await listen(options);
  const address = listener.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { port, channel: new PassiveChannel(listener, options) };
}

/** A listening server, and how to stop it listening (the port is then free for another). */
interface Listener {
  server: Server;
  stop(): void;
}

/**
 * Ports of a passive range this process listens on now (by address): they
 * are skipped without a bind, so a range full of our own listeners is
 * known to be full at the cost of a lookup per port, not a failing bind.
 */
const listening = new Set<string>();

async function listen(options: PassiveOptions): Promise<Listener> {
  const { range, host } = options;
  if (!range) {
    const server = await tryListen(host, 0);
    return { server, stop: () => server.close() };
  }
  const size = range.max - range.min + 1;
  const start = Math.floor(Math.random() * size);
  // Try every port of the range once, starting at a random one.
  for (let i = 0; i < size; i++) {
    const port = range.min + ((start + i) % size);
    const name = `${host}|${port}`;
    if (listening.has(name)) continue;
    try {
      const server = await tryListen(host, port);
      listening.add(name);
      let stopped = false;
      return {
        server,
        stop: () => {
          // Once only: the port may be another listener's by a second call.
          if (stopped) return;
          stopped = true;
          server.close();
          listening.delete(name);
        },
      };
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
  #listener: Listener;
  #socket: Socket | undefined;
  #waiter: ((socket: Socket | Error) => void) | undefined;
  #closed = false;
  /** A listener no transfer command claims within the data timeout is closed: ports are not hoarded. */
  #unclaimed: NodeJS.Timeout | undefined;

  constructor(listener: Listener, readonly options: PassiveOptions) {
    this.#listener = listener;
    const { server } = listener;
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
    this.#listener.stop();
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
    this.#listener.stop();
    this.#socket?.destroy();
    this.#waiter?.(new Error('data channel closed'));
  }
}
