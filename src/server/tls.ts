import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import type { FtpsConfig } from '../config/index.js';

/** One context for every TLS socket, control and data, so data connections can resume the control session. */
export function createTlsContext(ftps: FtpsConfig): SecureContext {
  return createSecureContext({ cert: ftps.cert, key: ftps.key, minVersion: 'TLSv1.2' });
}

/** Wraps an accepted or connected socket as the TLS server side; resolves once the handshake is done. */
export function acceptTls(socket: Socket, context: SecureContext, timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = new TLSSocket(socket, { isServer: true, secureContext: context });
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      secure.destroy();
      reject(err);
    };
    secure.once('error', fail);
    secure.once('secure', () => {
      clearTimeout(timer);
      secure.off('error', fail);
      resolve(secure);
    });
  });
}
