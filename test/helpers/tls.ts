import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FtpsConfig } from '../../src/config/index.js';
import { tempDir } from './server.js';

const made = new Map<'ec' | 'rsa', { cert: string; key: string }>();

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made once per process
 * with openssl: ECDSA P-256, or RSA 2048 (the only kind RSA key exchange works with).
 */
export function testCertificate(kind: 'ec' | 'rsa' = 'ec'): { cert: string; key: string } {
  const known = made.get(kind);
  if (known) return known;
  const dir = tempDir('s3ftp-tls-');
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const keyArgs = kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048'];
  execFileSync('openssl', [
    'req', '-x509', ...keyArgs, '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  made.set(kind, { cert, key });
  return { cert, key };
}

/** FTPS settings with the test certificate; every requirement on unless overridden. */
export function testFtps(overrides: Partial<FtpsConfig> = {}, kind: 'ec' | 'rsa' = 'ec'): FtpsConfig {
  const { cert, key } = testCertificate(kind);
  return {
    cert: readFileSync(cert),
    key: readFileSync(key),
    implicitPort: 0,
    requireTlsLogin: true,
    requireProtP: true,
    requireSessionReuse: true,
    requireCloseNotify: true,
    ...overrides,
  };
}
