import { Agent, createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3StorageConfig } from '../../src/config/index.js';

/** What the proxy does with one request: pass it to MinIO, or answer it with an S3 error itself. */
export type ProxyVerdict = 'forward' | { status: number; code: string };

/** A request as the proxy sees it, before it is forwarded. */
export interface ProxiedRequest {
  method: string;
  url: URL;
  /** Set on a CopyObject or UploadPartCopy. */
  copySource?: string;
}

export interface S3Proxy {
  /** The storage config, pointed at the proxy instead of MinIO. */
  config: S3StorageConfig;
  close(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of MinIO, for faults a real network or a real
 * S3 gives: a test decides, request by request, to delay it or answer an error.
 * Requests are forwarded byte for byte with their Host header, so the SDK's
 * signatures still hold. S3 itself is never mocked: every forwarded request
 * reaches MinIO.
 */
export async function startS3Proxy(
  config: S3StorageConfig,
  decide: (req: ProxiedRequest) => ProxyVerdict | Promise<ProxyVerdict>,
): Promise<S3Proxy> {
  const upstream = new URL(config.endpoint!);
  const agent = new Agent({ keepAlive: true });
  const server = createServer((req, res) => {
    const seen: ProxiedRequest = { method: req.method!, url: new URL(req.url!, upstream), copySource: header(req, 'x-amz-copy-source') };
    void Promise.resolve(decide(seen)).then(
      (verdict) => {
        if (verdict !== 'forward') {
          req.resume();
          res.writeHead(verdict.status, { 'content-type': 'application/xml' });
          res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${verdict.code}</Code><Message>injected by the test proxy</Message></Error>`);
          return;
        }
        const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent }, (answer) => {
          res.writeHead(answer.statusCode!, answer.headers);
          answer.pipe(res);
        });
        out.on('error', () => res.destroy());
        req.pipe(out);
      },
      () => res.destroy(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    config: { ...config, endpoint: `http://127.0.0.1:${port}` },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
