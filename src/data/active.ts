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

  constructor(readonly options: ActiveOptions) {}

  connect(): Promise<Socket> {
    const { host, port, localAddress, timeoutMs } = this.options;
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, localAddress });
      this.#socket = socket;
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error('timed out connecting to the client')));
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.setTimeout(0);
        socket.off('error', reject);
        socket.on('error', () => {}); // surfaced by whoever uses the socket
        resolve(socket);
      });
    });
  }

  close(): void {
    this.#socket?.destroy();
  }
}
