import { constants } from 'node:crypto';
import type { Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { FtpsConfig } from '../config/index.js';

/**
 * Forward-secret AEAD suites only: ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305 for TLS 1.2, and the TLS 1.3 suites (all of them are
 * forward-secret AEAD). No RSA key exchange, no CBC, no SHA-1 MACs. The order
 * is the server's preference (honorCipherOrder).
 */
export const DEFAULT_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const TLS_MIN_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsMinVersion = (typeof TLS_MIN_VERSIONS)[number];
export const DEFAULT_MIN_VERSION: TlsMinVersion = 'TLSv1.2';

/** The parts of FtpsConfig that make a SecureContext. */
type TlsPolicy = Pick<FtpsConfig, 'cert' | 'key' | 'ciphers' | 'minVersion'>;

/** Builds a SecureContext with the policy; throws (OpenSSL's error) when the cipher list selects nothing. */
function buildContext(policy: Partial<TlsPolicy>): SecureContext {
  return createSecureContext({
    cert: policy.cert,
    key: policy.key,
    minVersion: policy.minVersion ?? DEFAULT_MIN_VERSION,
    ciphers: policy.ciphers ?? DEFAULT_CIPHERS,
    honorCipherOrder: true,
    // OpenSSL answers a renegotiation request with a no_renegotiation alert
    // (TLS 1.2; TLS 1.3 has no renegotiation). secureSocket() adds Node's own guard.
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  });
}

/**
 * Checks a cipher list and minimum version as the server would use them;
 * returns an error message, or undefined when OpenSSL accepts them.
 */
export function checkTlsPolicy(ciphers: string, minVersion: TlsMinVersion): string | undefined {
  try {
    buildContext({ ciphers, minVersion });
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code === 'ERR_SSL_NO_CIPHER_MATCH' ? 'OpenSSL knows none of these suites' : 'not accepted by OpenSSL';
  }
}

/**
 * The listener's context, with the TLS policy. One context for every TLS
 * socket, control and data, so data connections can resume the control session.
 */
export function createTlsContext(ftps: FtpsConfig): SecureContext {
  return buildContext(ftps);
}

/**
 * Wraps a socket as the TLS server side with the per-socket policy (no
 * renegotiation). Every server-side TLS socket, control (AUTH TLS, implicit)
 * and data, should be made here.
 */
export function secureSocket(socket: Socket, context: SecureContext): TLSSocket {
  const secure = new TLSSocket(socket, { isServer: true, secureContext: context });
  // Node's guard: a renegotiation that gets past OpenSSL emits 'error'.
  secure.disableRenegotiation();
  return secure;
}

/**
 * Wraps an accepted or connected socket as the TLS server side (secureSocket)
 * and resolves once the handshake is done.
 */
export function acceptTls(socket: Socket, context: SecureContext, timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = secureSocket(socket, context);
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
