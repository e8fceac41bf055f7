import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FtpsConfig } from '../../src/config/index.js';
import { tempDir } from './server.js';

let files: { cert: string; key: string } | undefined;

/** A self-signed certificate for 127.0.0.1 and localhost, made once per process with openssl. */
export function testCertificate(): { cert: string; key: string } {
  if (files) return files;
  const dir = tempDir('s3ftp-tls-');
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  files = { cert, key };
  return files;
}

/** FTPS settings with the test certificate; every requirement on unless overridden. */
export function testFtps(overrides: Partial<FtpsConfig> = {}): FtpsConfig {
  const { cert, key } = testCertificate();
  return {
    cert: readFileSync(cert),
    key: readFileSync(key),
    implicitPort: 0,
    requireTlsLogin: true,
    requireProtP: true,
    requireSessionReuse: true,
    ...overrides,
  };
}
