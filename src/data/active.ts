import { connect, type Socket } from 'node:net';
import type { DataChannel } from './channel.js';

export interface ActiveOptions {
  host: string;
  port: number;
  /** Connect from the control connection's local address, so the client sees the server it knows. */
  localAddress: string;
  timeoutMs: number;
}

/** A PORT/EPRT target; the connection is made when a transfer starts. */
export class ActiveChannel implements DataChannel {
  readonly mode = 'active';
  #socket: Socket | undefined;
  #fail: ((err: Error) => void) | undefined;
  #closed = false;

  constructor(readonly options: ActiveOptions) {}

  /** Nothing waits on a PORT target before its transfer connects. */
  claim(): boolean {
    return !this.#closed;
  }

  release(): void {}

  connect(): Promise<Socket> {
    const { host, port, localAddress, timeoutMs } = this.options;
    if (this.#closed) return Promise.reject(new Error('data channel closed'));
    return new Promise((resolve, reject) => {
      // Half-open, so an upload's end can be told from a reset (see endedCleanly).
      const socket = connect({ host, port, localAddress, allowHalfOpen: true });
      this.#socket = socket;
      this.#fail = reject;
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error('timed out connecting to the client')));
      socket.once('error', reject);
      socket.once('connect', () => {
        this.#fail = undefined;
        socket.setTimeout(0);
        socket.off('error', reject);
        socket.on('error', () => {}); // surfaced by whoever uses the socket
        resolve(socket);
      });
    });
  }

  /** Destroying a connecting socket emits no error, so a pending connect() is rejected here. */
  close(): void {
    this.#closed = true;
    this.#socket?.destroy();
    this.#fail?.(new Error('data channel closed'));
    this.#fail = undefined;
  }
}
