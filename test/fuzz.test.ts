import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { COMMANDS } from '../src/commands/table.js';
import { RawFtp } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER } from './helpers/server.js';

const CONNECTIONS = 50;
const LINES = Number(process.env.FUZZ_LINES ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20261122);

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** xorshift32: the same lines for the same seed, so a failure can be replayed. */
function prng(seed: number): () => number {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const VERBS = Object.keys(COMMANDS).filter((v) => v !== 'QUIT');
const NAMES = ['a', 'dir', '..', '../..', 'ü ñ ✓', '-la', '/', '.', 'x y z', '%2e%2e', 'a\\b', '|1|127.0.0.1|1|', '127,0,0,1,4,1', 'ALL', '0', 'P', 'A N', 'UTF8 ON', 'MLST type;'];

function fuzzLine(rand: () => number): Buffer {
  const pick = <T>(items: readonly T[]) => items[Math.floor(rand() * items.length)]!;
  const junk = (n: number) => {
    const bytes = Buffer.alloc(n);
    for (let i = 0; i < n; i++) bytes[i] = Math.floor(rand() * 256);
    return Buffer.from(bytes.filter((b) => b !== 10 && b !== 13));
  };
  const kind = rand();
  let line: Buffer;
  if (kind < 0.45) {
    line = Buffer.from(`${pick(VERBS)} ${pick(NAMES)}${rand() < 0.3 ? `/${pick(NAMES)}` : ''}`);
  } else if (kind < 0.6) {
    line = junk(Math.floor(rand() * 200));
  } else if (kind < 0.72) {
    // Telnet: IAC IP IAC DM, WILL/DO negotiation, a doubled IAC, a dangling IAC.
    line = Buffer.concat([Buffer.from([0xff, 0xf4, 0xff, 0xf2]), Buffer.from(pick(VERBS)), Buffer.from([0xff, 0xfb, 0x01, 0xff, 0xff, 0x20, 0xff])]);
  } else if (kind < 0.74) {
    line = Buffer.from(`${pick(VERBS)} ${'A'.repeat(4096 + Math.floor(rand() * 8192))}`);
  } else {
    // A valid command with a few bytes flipped.
    line = Buffer.from(`${pick(VERBS)} ${pick(NAMES)}`);
    for (let i = 0; i < 1 + rand() * 3; i++) line[Math.floor(rand() * line.length)] = Math.floor(rand() * 256);
  }
  return Buffer.concat([line, Buffer.from(rand() < 0.9 ? '\r\n' : rand() < 0.5 ? '\n' : '\r')]);
}

/** Lines the server has taken as commands (each logs one line), over all connections. */
let processed = 0;

/** Lines a connection may have sent ahead of the replies it has read: the server is kept busy, not buried. */
const WINDOW = 64;

/** Final (non-1xx) reply lines in a chunk of the server's output: about one per command line. */
function finalReplies(text: string): number {
  return text.match(/^[2-5]\d\d /gm)?.length ?? 0;
}

/** Sends fuzzed lines over one connection until the server has processed `target` in all, reconnecting whenever it closes. */
async function hammer(port: number, target: number, rand: () => number, login: boolean): Promise<void> {
  while (processed < target) {
    const socket: Socket = connect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    let sent = 0;
    let answered = 0;
    let progress: () => void = () => {};
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      answered += finalReplies(text);
      progress();
    });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    closed.then(() => progress(), () => {});
    if (login) {
      socket.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\n`);
      sent += 2;
    }
    answered -= 1; // the greeting
    while (processed < target && !socket.destroyed) {
      // Wait for replies (or give up waiting: a line of only Telnet bytes gets none).
      while (sent - answered > WINDOW && !socket.destroyed) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 250);
          progress = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        if (sent - answered > WINDOW) answered = sent - WINDOW; // a line that got no reply
      }
      const batch: Buffer[] = [];
      for (let i = 0; i < 16; i++) batch.push(fuzzLine(rand));
      sent += batch.length;
      socket.write(Buffer.concat(batch));
      await new Promise((r) => setImmediate(r));
    }
    socket.end('QUIT\r\n');
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
    socket.destroy();
  }
}

const [local] = await drivers();

test(`${LINES} fuzzed command lines over ${CONNECTIONS} connections leave the server answering, memory back near baseline (seed ${SEED})`, { timeout: 240_000 }, async () => {
  const server = await startTestServer(
    local!,
    {
      dataTimeoutMs: 200,
      limits: { maxConnections: 1000, maxConnectionsPerAddress: 1000, maxLoginFailures: 1_000_000, loginFailureWindowMs: 60_000, lockoutMs: 1000, failedLoginDelayMs: 0 },
    },
    {
      logSink: (line) => {
        if (line.includes('"event":"command')) processed++;
        if (process.env.FUZZ_DEBUG && /"ms":\d{2,}/.test(line)) process.stderr.write(line);
      },
    },
  );
  try {
    gc();
    const baseline = process.memoryUsage().heapUsed;
    const rand = prng(SEED);
    const seeds = Array.from({ length: CONNECTIONS }, () => Math.floor(rand() * 2 ** 31));
    await Promise.all(seeds.map((seed, i) => hammer(server.port, LINES, prng(seed), i % 2 === 0)));
    assert.ok(processed >= LINES, `the server processed ${processed} command lines`);
    const ftp = await RawFtp.login(server.port, USER, PASSWORD);
    await ftp.expect('NOOP', 200);
    await ftp.expect('PWD', 257);
    ftp.close();
    await new Promise((r) => setTimeout(r, 500));
    gc();
    const growth = process.memoryUsage().heapUsed - baseline;
    assert.ok(growth < 32 * 1024 * 1024, `heap grew by ${(growth / 1048576).toFixed(1)} MiB`);
  } finally {
    await server.close();
  }
});
