/**
 * node dist/bench/ascii.js [MiB]: CPU time of the TYPE A conversions in
 * process, against a plain pass-through (what TYPE I costs the server for the
 * same bytes). Text of 60-byte LF lines in 64 KiB chunks, 200 MiB by default.
 */
import { PassThrough, Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fromNetworkAscii, toNetworkAscii } from '../src/data/ascii.js';

const mib = Number(process.argv[2] ?? 200);
const line = Buffer.from('a line of text of about sixty bytes, like a log or a CSV row\n');
const lf = Buffer.concat(Array.from({ length: Math.ceil(65536 / line.length) }, () => line)).subarray(0, 65536);
const crlf = Buffer.from(lf.toString('latin1').replaceAll('\n', '\r\n'), 'latin1').subarray(0, 65536);

async function measure(name: string, chunk: Buffer, transform: () => Transform): Promise<void> {
  const count = Math.round((mib * 1024 * 1024) / chunk.length);
  let n = 0;
  // A fresh copy per chunk, as a socket or S3 body would hand over.
  const source = new Readable({
    read() {
      this.push(n++ < count ? Buffer.from(chunk) : null);
    },
  });
  let bytes = 0;
  const sink = new Writable({
    write(c: Buffer, _enc, done) {
      bytes += c.length;
      done();
    },
  });
  const cpu = process.cpuUsage();
  const wall = performance.now();
  await pipeline(source, transform(), sink);
  const used = process.cpuUsage(cpu);
  const ms = (used.user + used.system) / 1000;
  console.log(
    `${name.padEnd(28)} ${String(mib).padStart(4)} MiB in  ${(bytes / 1048576).toFixed(0).padStart(4)} MiB out  ` +
      `cpu ${ms.toFixed(0).padStart(6)} ms  wall ${(performance.now() - wall).toFixed(0).padStart(6)} ms`,
  );
}

await measure('binary (pass-through)', lf, () => new PassThrough());
await measure('TYPE A to network (RETR)', lf, toNetworkAscii);
await measure('TYPE A from network (STOR)', crlf, fromNetworkAscii);
