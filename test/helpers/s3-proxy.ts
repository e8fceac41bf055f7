import { Agent, createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * What the proxy does with one request: pass it to S3, answer it with an S3
 * error itself, or pass it to S3 and hold S3's answer back (a reply lost to a
 * client's timeout after S3 did the work).
 */
export type ProxyVerdict = 'forward' | { status: number; code: string } | { answerAfterMs: number } | { rewrite: (answer: ProxiedAnswer) => ProxiedAnswer };

/**
 * S3's whole answer, for a verdict that changes it before the client sees it
 * (a store, or something in front of it, that answers wrongly). A changed
 * body goes out chunked unless the headers give its length.
 */
export interface ProxiedAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A request as the proxy sees it, before it is forwarded. */
export interface ProxiedRequest {
  method: string;
  url: URL;
  /** The S3 operation of this path-style request, e.g. 'PutObject', 'CopyObject', 'ListObjectsV2'. */
  operation: string;
}

export interface S3Proxy {
  /** Where clients send requests instead of S3. */
  endpoint: string;
  /** TCP connections clients opened to the proxy (keep-alive reuse shows here). */
  connections: number;
  close(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of MinIO, for what a real network or a real
 * S3 does: a caller sees each request as it is sent (to count it), and may
 * delay it or answer an error. Requests are forwarded byte for byte with their
 * Host header, so the SDK's signatures still hold. S3 itself is never mocked:
 * every forwarded request reaches MinIO.
 */
/** What a proxy does with each request it sees. */
export type ProxyDecide = (req: ProxiedRequest) => ProxyVerdict | Promise<ProxyVerdict>;

export async function startS3Proxy(target: string, decide: ProxyDecide = () => 'forward'): Promise<S3Proxy> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const server = createServer((req, res) => {
    const url = new URL(req.url!, upstream);
    const seen: ProxiedRequest = { method: req.method!, url, operation: operation(req, url) };
    void (async () => decide(seen))().then(
      (verdict) => {
        if (res.destroyed) return; // the client left while the request was held
        if (verdict !== 'forward' && 'status' in verdict) {
          req.resume();
          res.writeHead(verdict.status, { 'content-type': 'application/xml' });
          res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${verdict.code}</Code><Message>injected by the test proxy</Message></Error>`);
          return;
        }
        const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent }, (answer) => {
          const pass = () => {
            if (res.destroyed) return answer.resume();
            res.writeHead(answer.statusCode!, answer.headers);
            answer.pipe(res);
          };
          if (verdict === 'forward') pass();
          else if ('rewrite' in verdict) {
            const chunks: Buffer[] = [];
            answer.on('data', (chunk: Buffer) => chunks.push(chunk));
            answer.on('end', () => {
              if (res.destroyed) return;
              const changed = verdict.rewrite({ status: answer.statusCode!, headers: { ...answer.headers }, body: Buffer.concat(chunks) });
              res.writeHead(changed.status, Object.fromEntries(Object.entries(changed.headers).filter(([, value]) => value !== undefined)));
              res.end(changed.body);
            });
          } else {
            const timer = setTimeout(pass, verdict.answerAfterMs);
            // A held answer does not keep the test's process alive once the client has gone.
            res.on('close', () => clearTimeout(timer));
          }
        });
        out.on('error', () => res.destroy());
        // A client that leaves mid-request or mid-answer leaves S3 too, as it would without the proxy.
        req.on('close', () => {
          if (!req.complete) out.destroy();
        });
        res.on('close', () => {
          if (!res.writableFinished) out.destroy();
        });
        req.pipe(out);
      },
      () => res.destroy(),
    );
  });
  const proxy: S3Proxy = {
    endpoint: '',
    connections: 0,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
  server.on('connection', () => proxy.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

function operation(req: IncomingMessage, url: URL): string {
  const method = req.method ?? '';
  const q = url.searchParams;
  const copy = req.headers['x-amz-copy-source'] !== undefined;
  if (q.has('list-type')) return 'ListObjectsV2';
  if (q.has('uploads')) return method === 'POST' ? 'CreateMultipartUpload' : 'ListMultipartUploads';
  if (q.has('uploadId')) {
    if (method === 'PUT') return copy ? 'UploadPartCopy' : 'UploadPart';
    return method === 'POST' ? 'CompleteMultipartUpload' : method === 'DELETE' ? 'AbortMultipartUpload' : 'ListParts';
  }
  if (q.has('tagging')) return `${method === 'PUT' ? 'Put' : method === 'GET' ? 'Get' : 'Delete'}ObjectTagging`;
  if (q.has('delete')) return 'DeleteObjects';
  if (url.pathname.split('/').filter(Boolean).length <= 1) return `${method} bucket`;
  if (method === 'PUT' && copy) return 'CopyObject';
  return { GET: 'GetObject', HEAD: 'HeadObject', PUT: 'PutObject', DELETE: 'DeleteObject' }[method] ?? `${method} object`;
}
