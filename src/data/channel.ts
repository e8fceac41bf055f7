import type { Socket } from 'node:net';

/** A data connection that has been set up (PASV/EPSV or PORT/EPRT) but maybe not opened yet. */
export interface DataChannel {
  readonly mode: 'passive' | 'active';
  /**
   * A transfer command takes the channel: while it prepares (a resume's
   * server-side copy can outlast the data timeout) the channel waits for it,
   * not for the timeout of a channel nobody uses. False if the channel has
   * closed meanwhile (that timeout ran out): there is none to take.
   */
  claim(): boolean;
  /** The command ended without using the channel (it was refused): the unused channel's timeout runs again. */
  release(): void;
  /** Resolves with the open connection; rejects after the timeout or on close(). */
  connect(): Promise<Socket>;
  /** Releases the listener or pending socket. Safe to call twice. */
  close(): void;
}

/** Strips the IPv4-mapped IPv6 prefix so addresses compare equal. */
export function plainAddress(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/i, '');
}
