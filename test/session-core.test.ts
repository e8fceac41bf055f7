import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { basicFtp, getFile, putFile, RawFtp, readAll } from './helpers/ftp.js';
import { childEnv, startServerProcess } from './helpers/process.js';
import { rcloneBinary, rcloneFtpEnv } from './helpers/rclone.js';
import { drivers, noDanglingUploads, overriding, PASSWORD, startTestServer, tempDir, USER, type Driver, type TestServer } from './helpers/server.js';
import { testFtps } from './helpers/tls.js';

const MiB = 1024 * 1024;
const all = await drivers();
const local = all.find((d) => d.name === 'local')!;

/** Resolves once everything written so far has been handed to the kernel. */
function flushed(socket: Socket, data: Buffer): Promise<void> {
  return new Promise((resolve) => socket.write(data, () => resolve()));
}

const put = (server: TestServer, name: string, content: Buffer) => putFile(server.port, USER, PASSWORD, name, content);
const get = (server: TestServer, name: string) => getFile(server.port, USER, PASSWORD, name);

/** The server still serves: a new session logs in and answers NOOP. */
async function stillServes(server: TestServer): Promise<void> {
  const raw = await RawFtp.login(server.port, USER, PASSWORD);
  await raw.expect('NOOP', 200);
  raw.close();
}

/** Kills a child with SIGKILL after `ms`, and waits for it to be gone. */
async function killAfter(child: ChildProcess, ms: number): Promise<void> {
  const exited = once(child, 'exit');
  await sleep(ms);
  child.kill('SIGKILL');
  await exited;
}

for (const driver of all) {
  describe(`session core (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver);
    });
    after(async () => {
      await server?.close();
    });

    test('STOR into a missing directory, onto a directory, or with a bad REST: the refusal comes with no 150 before it', async () => {
      await put(server, 'rest-short.txt', Buffer.from('12345'));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD a-dir', 257);
      for (const [command, code] of [
        ['STOR /no-such-dir/x', 550],
        ['STOR a-dir', 550],
        ['APPE /no-such-dir/x', 550],
      ] as const) {
        const data = await raw.passive();
        await raw.expect(command, code);
        data.destroy();
      }
      const data = await raw.passive();
      await raw.expect('REST 9', 350);
      await raw.expect('STOR rest-short.txt', 554);
      data.destroy();
      await raw.expect('NOOP', 200);
      raw.close();
    });

    test('the crash sequence (150, then the data and control sockets closed at once) 100 times leaves the server running and nothing published', async () => {
      for (let i = 0; i < 100; i++) {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const data = await raw.passive();
        if (i % 2 === 0) {
          await raw.expect('STOR /no-such-dir/x', 550);
        } else {
          await raw.expect(`STOR crash-${i}.bin`, 150);
          await flushed(data, randomBytes(64 * 1024));
        }
        data.destroy();
        raw.socket.destroy();
      }
      await stillServes(server);
      await noDanglingUploads(driver, server);
      const listing = await server.storage.list('')[Symbol.asyncIterator]().next();
      const names = (listing.value ?? []).map((f: { name: string }) => f.name);
      assert.deepEqual(names.filter((n: string) => n.startsWith('crash-')), []);
    });

    const deaths = ['data FIN, then control', 'control, then data FIN', 'data reset', 'data reset, then control'] as const;
    for (const how of deaths) {
      test(`a raw client that dies mid-upload (${how}), 20 times, never replaces the old file and leaves no upload`, async () => {
        const name = `dies-${how.replace(/[ ,]+/g, '-')}.bin`;
        const original = randomBytes(3000);
        await put(server, name, original);
        for (let i = 0; i < 20; i++) {
          const raw = await RawFtp.login(server.port, USER, PASSWORD);
          const data = await raw.passive();
          await raw.expect(`STOR ${name}`, 150);
          // Every other time past one S3 part, so a multipart upload is under way.
          await flushed(data, randomBytes(i % 2 ? 6 * MiB : 256 * 1024));
          if (how === 'data FIN, then control') {
            data.end();
            raw.socket.destroy();
          } else if (how === 'control, then data FIN') {
            raw.socket.destroy();
            data.end();
          } else if (how === 'data reset') {
            data.resetAndDestroy();
            assert.equal((await raw.read()).code, 426);
            raw.close();
          } else {
            data.resetAndDestroy();
            raw.socket.destroy();
          }
        }
        await noDanglingUploads(driver, server);
        assert.deepEqual(await get(server, name), original);
        await stillServes(server);
      });
    }

    for (const close of ['FIN', 'reset'] as const) {
      test(`a control connection that closes (${close}) within the settle time discards the upload, even when the server is too busy to read that close until after it`, async () => {
        // The window counts arrivals, not what the event loop got round to reading.
        const busy = await startTestServer(driver, { uploadSettleMs: 500 });
        try {
          const name = 'closed-while-busy.bin';
          const original = randomBytes(3000);
          await put(busy, name, original);
          const raw = await RawFtp.login(busy.port, USER, PASSWORD);
          const data = await raw.passive();
          await raw.expect(`STOR ${name}`, 150);
          await flushed(data, randomBytes(64 * 1024));
          // The server ends its side once it has our FIN: the settle time has begun.
          data.resume();
          const serverEnded = once(data, 'end');
          data.end();
          await serverEnded;
          await sleep(20);
          // From a check-phase callback, so that the next loop turn starts with its timers: the control
          // connection closes 20 ms into the 500, and the loop is busy until 500 ms have long passed.
          await new Promise<void>((resolve) =>
            setImmediate(() => {
              if (close === 'FIN') raw.socket.destroy();
              else raw.socket.resetAndDestroy();
              const until = performance.now() + 800;
              while (performance.now() < until);
              resolve();
            }),
          );
          await sleep(1000);
          await noDanglingUploads(driver, busy);
          const stored = await get(busy, name);
          assert.equal(stored.length, original.length, 'the upload was published');
          assert.ok(stored.equals(original));
        } finally {
          await busy.close();
        }
      });
    }

    test('a client that resets a download after its first bytes gets 426 (226 if all was sent), never 451, 20 times (rclone ObjectPartialRead)', async () => {
      await put(server, 'partial-read.bin', randomBytes(4 * MiB));
      await put(server, 'partial-read-small.bin', randomBytes(100));
      for (let i = 0; i < 20; i++) {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const data = await raw.passive();
        await raw.expect(`RETR partial-read${i % 2 ? '' : '-small'}.bin`, 150);
        await once(data, 'data');
        data.resetAndDestroy();
        // 226 when every byte was already sent (the small file); the client's reset is never the storage's fault.
        const code = (await raw.read()).code;
        assert.ok(code === 426 || (code === 226 && i % 2 === 0), `got ${code}`);
        raw.close();
      }
      await stillServes(server);
    });

    test('curl, rclone and Python ftplib killed mid-upload, 20 times each, never replace the old file and leave no upload', async () => {
      const rclone = await rcloneBinary();
      const rcloneEnv = rclone ? await rcloneFtpEnv(rclone, server.port, USER, PASSWORD) : undefined;
      const dir = tempDir();
      const big = join(dir, 'big.bin');
      writeFileSync(big, randomBytes(24 * MiB));
      const original = randomBytes(2000);
      await put(server, 'killed.bin', original);
      const url = `ftp://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}/killed.bin`;
      const python = [
        'import ftplib, sys, time',
        'class Slow:',
        '    def __init__(self): self.f = open(sys.argv[4], "rb")',
        '    def read(self, n):',
        '        time.sleep(0.05)',
        '        return self.f.read(n)',
        'ftp = ftplib.FTP()',
        'ftp.connect("127.0.0.1", int(sys.argv[1]))',
        'ftp.login(sys.argv[2], sys.argv[3])',
        'ftp.storbinary("STOR killed.bin", Slow(), blocksize=256 * 1024)',
      ].join('\n');
      for (let i = 0; i < 20; i++) {
        const curl = spawn('curl', ['-s', '--limit-rate', '8M', '-T', big, url], { stdio: 'ignore' });
        await killAfter(curl, 300 + ((i * 97) % 900));
        const ftplib = spawn('python3', ['-c', python, String(server.port), USER, PASSWORD, big], { stdio: 'ignore' });
        await killAfter(ftplib, 300 + ((i * 131) % 900));
        if (rclone) {
          const copy = spawn(rclone, ['copyto', '--inplace', '--bwlimit', '8M', '--retries', '1', big, ':ftp:killed.bin'], { env: rcloneEnv, stdio: 'ignore' });
          await killAfter(copy, 400 + ((i * 173) % 900));
        }
      }
      await noDanglingUploads(driver, server);
      assert.deepEqual(await get(server, 'killed.bin'), original);
      await stillServes(server);
    });

    test('pipelined commands are answered one by one, in order; a command behind a transfer waits for its final reply', async () => {
      const socket = connect({ port: server.port, host: '127.0.0.1' });
      await once(socket, 'connect');
      const raw = RawFtp.over(socket);
      assert.equal((await raw.read()).code, 220);
      socket.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\nTYPE I\r\nNOOP\r\nPWD\r\nSYST\r\nEPSV\r\n`);
      const codes: number[] = [];
      for (let i = 0; i < 7; i++) codes.push((await raw.read()).code);
      assert.deepEqual(codes, [331, 230, 200, 200, 257, 215, 229]);
      const data = await raw.passive();
      socket.write('STOR piped.bin\r\nNOOP\r\nSIZE piped.bin\r\n');
      assert.equal((await raw.read()).code, 150);
      data.end(Buffer.alloc(1000, 1));
      assert.deepEqual([(await raw.read()).code, (await raw.read()).code], [226, 200]);
      const size = await raw.read();
      assert.deepEqual([size.code, size.text], [213, '1000']);
      raw.close();
    });

    test('clients pipelining thousands of commands get one run per turn of the server: another session is answered between two of theirs', async () => {
      // Each flooder keeps 5,000 NOOPs queued (and reads its replies, so nothing pauses it).
      const flooders = await Promise.all([0, 1, 2].map(() => RawFtp.login(server.port, USER, PASSWORD)));
      let answered = 0;
      let stop = false;
      for (const f of flooders) {
        f.socket.removeAllListeners('data');
        let owed = 0;
        const refill = () => {
          if (stop || owed > 2_500) return;
          owed += 5_000;
          f.socket.write('NOOP\r\n'.repeat(5_000));
        };
        f.socket.on('data', (text: string) => {
          const n = text.split('\n').length - 1;
          answered += n;
          owed -= n;
          refill();
        });
        refill();
      }
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      const behind: number[] = [];
      for (let i = 0; i < 20; i++) {
        const before = answered;
        await other.expect('NOOP', 200);
        behind.push(answered - before);
      }
      stop = true;
      for (const f of flooders) f.socket.destroy();
      other.close();
      behind.sort((a, b) => a - b);
      // One command per session per turn: a few flooder replies between two of ours, not thousands.
      assert.ok(behind[10]! < 300, `flooder replies while one NOOP of another session waited: ${behind.join(' ')}`);
    });

    test('a passive connection reset before the server accepts it is dropped quietly; the next one carries the transfer', async () => {
      const lines: string[] = [];
      const watched = await startTestServer(driver, {}, { logLines: lines });
      try {
        const raw = await RawFtp.login(watched.port, USER, PASSWORD);
        const port = Number(/\|(\d+)\|/.exec((await raw.expect('EPSV', 229)).text)![1]);
        // While this process (and the server in it) is blocked, a client connects and resets three times:
        // the kernel completes each handshake, and the server accepts sockets already reset.
        const reset = 'import socket, struct, sys\nfor _ in range(3):\n    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))\n    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))\n    s.close()\n';
        execFileSync('python3', ['-c', reset, String(port)], { timeout: 10_000 });
        await sleep(100);
        const data = connect({ port, host: '127.0.0.1' });
        await raw.expect('STOR reset-first.bin', 150);
        data.end(Buffer.alloc(10, 1));
        assert.equal((await raw.read(5000)).code, 226);
        raw.close();
        // Got: "refused passive data connection from another address", with no address, for each reset.
        assert.ok(!lines.some((l) => l.includes('another address')), 'a reset is no foreign peer');
      } finally {
        await watched.close();
      }
    });

    test('an upload sent one byte per TCP segment reaches the storage in few chunks (each held chunk costs hundreds of bytes)', async () => {
      const chunks: number[] = [];
      const watched = await startTestServer(driver, {}, {
        wrapStorage: (storage) =>
          overriding(storage, 'write', (target) => (path, body, options) => {
            const seen = new Transform({
              transform(chunk: Buffer, _enc, done) {
                chunks.push(chunk.length);
                done(null, chunk);
              },
            });
            body.on('error', (err) => seen.destroy(err));
            return target.write(path, body.pipe(seen), options);
          }),
      });
      try {
        const raw = await RawFtp.login(watched.port, USER, PASSWORD);
        const data = await raw.passive();
        data.setNoDelay(true);
        await raw.expect('STOR trickled.bin', 150);
        const BYTES = 3000;
        for (let i = 0; i < BYTES; i++) {
          await new Promise<void>((resolve) => data.write(Buffer.of(i & 0xff), () => resolve()));
          if (i % 10 === 0) await sleep(1);
        }
        data.end();
        assert.equal((await raw.read()).code, 226);
        assert.equal((await getFile(watched.port, USER, PASSWORD, 'trickled.bin')).length, BYTES);
        // Got: about one chunk per byte (3000), each held until its part or batch was full:
        // 1-byte segments took the server up by about 250 bytes of memory per byte sent.
        assert.ok(chunks.length <= 3, `${chunks.length} chunks for ${BYTES} bytes`);
        raw.close();
      } finally {
        await watched.close();
      }
    });

    test('HASH runs as a transfer does: ABOR stops it (426, then 226), so does the client leaving, even with a FIN, and commands behind it wait', async () => {
      // A hash that takes as long as a file of many GiB: it ends when its signal aborts, or after 2 s.
      const stopped: string[] = [];
      const slow = await startTestServer(driver, {}, {
        wrapStorage: (storage) =>
          overriding(storage, 'hash', (target) => async (path, algorithm, signal) => {
            const done = await Promise.race([
              sleep(2000).then(() => 'finished'),
              new Promise<string>((resolve) => signal?.addEventListener('abort', () => resolve('aborted'), { once: true })),
            ]);
            stopped.push(`${path} ${done}`);
            return target.hash(path, algorithm, signal);
          }),
      });
      try {
        await put(slow, 'big.bin', Buffer.from('pretend this is big'));
        const raw = await RawFtp.login(slow.port, USER, PASSWORD);
        raw.socket.write('HASH big.bin\r\n');
        await sleep(200);
        raw.socket.write('ABOR\r\n');
        // Got: 213 after 2 s, then 225 "No transfer to abort": ABOR was read only once HASH was done.
        assert.deepEqual([(await raw.read()).code, (await raw.read()).code], [426, 226]);
        assert.deepEqual(stopped, ['big.bin aborted']);
        // Not aborted, it answers as before, and a command sent behind it is answered after it.
        raw.socket.write('HASH big.bin\r\nPWD\r\n');
        const [hashed, pwd] = [await raw.read(), await raw.read()];
        assert.match(hashed.text, /^SHA-256 0-19 [0-9a-f]{64} \/big\.bin$/);
        assert.equal(pwd.code, 257);
        // A client that sends HASH and leaves: the work stops. Got: it ran to its end, 2 s later.
        raw.socket.end('HASH big.bin\r\n');
        const deadline = Date.now() + 3000;
        while (stopped.length < 3 && Date.now() < deadline) await sleep(20);
        assert.deepEqual(stopped.slice(1), ['big.bin finished', 'big.bin aborted']);
        await stillServes(slow);
      } finally {
        await slow.close();
      }
    });

    test('a transfer whose preparation outlasts the data timeout (a resume copying a big kept prefix) still gets its data connection', async () => {
      // The storage takes a second before it starts the write, as a resume copying gigabytes would.
      const slow = await startTestServer(driver, { dataTimeoutMs: 300 }, {
        wrapStorage: (storage) => overriding(storage, 'write', (target) => async (...args) => (await sleep(1000), target.write(...args))),
      });
      try {
        for (const early of [true, false]) {
          const raw = await RawFtp.login(slow.port, USER, PASSWORD);
          await raw.expect('TYPE I', 200);
          // The client connects at once (most do), or only after the 150.
          const port = Number(/\|(\d+)\|/.exec((await raw.expect('EPSV', 229)).text)![1]);
          const data = early ? connect({ port, host: '127.0.0.1' }) : undefined;
          // Got: 150, then 425 once the listener's 300 ms for an unclaimed channel ran out during the preparation.
          await raw.expect(`STOR slow-${early}.bin`, 150);
          const socket = data ?? connect({ port, host: '127.0.0.1' });
          socket.end(Buffer.alloc(1000, 3));
          assert.equal((await raw.read(5000)).code, 226);
          raw.close();
          assert.equal((await getFile(slow.port, USER, PASSWORD, `slow-${early}.bin`)).length, 1000);
        }
      } finally {
        await slow.close();
      }
    });

    test('a client that half-closes after pipelining its commands gets every reply, then the server closes', async () => {
      const socket = connect({ port: server.port, host: '127.0.0.1' });
      await once(socket, 'connect');
      const raw = RawFtp.over(socket);
      assert.equal((await raw.read()).code, 220);
      socket.end(`USER ${USER}\r\nPASS ${PASSWORD}\r\nPWD\r\nNOOP\r\n`);
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) codes.push((await raw.read()).code);
      assert.deepEqual(codes, [331, 230, 257, 200]);
      assert.equal((await raw.read()).code, 0, 'the server closes once every command ran');
    });

    test('the idle timer runs only while the server waits for a command: a slow transfer longer than it completes', async () => {
      const idle = await startTestServer(driver, { idleTimeoutMs: 1000 });
      try {
        const raw = await RawFtp.login(idle.port, USER, PASSWORD);
        const data = await raw.passive();
        await raw.expect('STOR slow.bin', 150);
        for (let i = 0; i < 10; i++) {
          await flushed(data, Buffer.alloc(1000, i));
          await sleep(250);
        }
        data.end();
        assert.equal((await raw.read()).code, 226);
        await raw.expect('NOOP', 200);
        // Then, silent for longer than the timeout: 421.
        assert.equal((await raw.read(3000)).code, 421);
        raw.close();
      } finally {
        await idle.close();
      }
    });

    test('REST is consumed by the next command, whatever it is', async () => {
      await put(server, 'rest.txt', Buffer.from('0123456789'));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      // A failed or unrelated command between REST and STOR drops the offset: the file is replaced whole.
      await raw.expect('REST 4', 350);
      await raw.expect('NOOP', 200);
      let data = await raw.passive();
      await raw.expect('STOR rest.txt', 150);
      data.end('AB');
      assert.equal((await raw.read()).code, 226);
      data = await raw.passive();
      await raw.expect('REST 1', 350);
      await raw.expect('RETR missing.txt', 550);
      data.destroy();
      data = await raw.passive();
      await raw.expect('RETR rest.txt', 150);
      assert.equal((await readAll(data)).toString(), 'AB');
      assert.equal((await raw.read()).code, 226);
      // In ASCII mode an offset means nothing the client could compute: 554 before any 150.
      await raw.expect('TYPE A', 200);
      data = await raw.passive();
      await raw.expect('REST 1', 350);
      await raw.expect('RETR rest.txt', 554);
      data.destroy();
      await raw.expect('TYPE I', 200);
      await raw.expect('REST 1', 350);
      await raw.expect('BOGUS', 500);
      data = await raw.passive();
      await raw.expect('RETR rest.txt', 150);
      assert.equal((await readAll(data)).toString(), 'AB');
      assert.equal((await raw.read()).code, 226);
      // A refused REST drops the one before it too. Got: the STOR below kept "A" in front.
      await raw.expect('REST 1', 350);
      await raw.expect('REST abc', 501);
      data = await raw.passive();
      await raw.expect('STOR rest.txt', 150);
      data.end('XY');
      assert.equal((await raw.read()).code, 226);
      assert.equal((await get(server, 'rest.txt')).toString(), 'XY');
      raw.close();
    });

    test("REST before PASV or EPSV (node-ftp's order) holds for the transfer after it", async () => {
      await put(server, 'rest-first.txt', Buffer.from('0123456789'));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      // Got: the offset was dropped by the PASV, and the STOR replaced the file with its tail ("AB").
      await raw.expect('REST 4', 350);
      let data = await raw.passive();
      await raw.expect('STOR rest-first.txt', 150);
      data.end('AB');
      assert.equal((await raw.read()).code, 226);
      assert.equal((await get(server, 'rest-first.txt')).toString(), '0123AB');
      await raw.expect('REST 2', 350);
      await raw.expect('TYPE I', 200);
      const reply = await raw.expect('PASV', 227);
      const nums = /(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/.exec(reply.text)!.slice(1).map(Number);
      data = connect({ host: '127.0.0.1', port: nums[4]! * 256 + nums[5]! });
      await once(data, 'connect');
      await raw.expect('RETR rest-first.txt', 150);
      assert.equal((await readAll(data)).toString(), '23AB');
      assert.equal((await raw.read()).code, 226);
      raw.close();
    });

    test('a passive channel a refused transfer command left unused closes after the data timeout, as one never used does', async () => {
      const short = await startTestServer(driver, { dataTimeoutMs: 300 });
      try {
        const raw = await RawFtp.login(short.port, USER, PASSWORD);
        for (const refused of [['RETR nosuch.bin', 550], ['STOR nodir/x.bin', 550], ['LIST nosuch', 550]] as const) {
          const port = Number(/\|(\d+)\|/.exec((await raw.expect('EPSV', 229)).text)![1]);
          await raw.expect(refused[0], refused[1]);
          await raw.expect('NOOP', 200);
          await sleep(900);
          // Got: connected, for as long as the session lived.
          const attempt = connect({ port, host: '127.0.0.1' });
          const outcome = await new Promise<string>((resolve) => {
            attempt.once('connect', () => resolve('connected'));
            attempt.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
          });
          attempt.destroy();
          assert.equal(outcome, 'ECONNREFUSED', refused[0]);
        }
        // A transfer command after that is told at once, as with no PASV at all. Got: 150, then 425.
        await raw.expect('EPSV', 229);
        await sleep(900);
        await raw.expect('LIST', 425);
        await raw.expect('NOOP', 200);
        raw.close();
      } finally {
        await short.close();
      }
    });
  });
}

/** A TCP listener whose accept queue is full, so a connect to it stays pending (SYNs are dropped). */
async function blackholePort(): Promise<{ port: number; close(): void }> {
  const child = spawn('python3', ['-c', [
    'import socket, sys, time',
    's = socket.socket()',
    's.bind(("127.0.0.1", 0))',
    's.listen(0)',
    'print(s.getsockname()[1], flush=True)',
    'time.sleep(120)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'ignore'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  // Fill the accept queue (it holds backlog + 1).
  const fillers: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    fillers.push(socket);
  }
  await sleep(300);
  return {
    port,
    close() {
      for (const socket of fillers) socket.destroy();
      child.kill('SIGKILL');
    },
  };
}

describe('session core (control connection)', { skip: local.skip }, () => {
  test('STAT of a big directory answers at most 64 KiB over the control connection, then says to use LIST', async () => {
    const server = await startTestServer(local);
    try {
      const dir = join((server.storageConfig as { dataDir: string }).dataDir, 'big');
      mkdirSync(dir);
      for (let i = 0; i < 3000; i++) mkdirSync(join(dir, `${String(i).padStart(5, '0')}-${'n'.repeat(120)}`));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const reply = await raw.expect('STAT big', 213);
      const bytes = Buffer.byteLength(reply.lines.join('\r\n'));
      // 3,000 lines of about 180 bytes were one 540 KB reply, held for a client that need not read it.
      assert.ok(bytes <= 65 * 1024, `STAT reply of ${bytes} bytes`);
      assert.match(reply.lines.at(-2) ?? '', /use LIST/);
      assert.ok(reply.lines.length > 100, 'it still lists what fits');
      await raw.expect('NOOP', 200);
      raw.close();
    } finally {
      await server.close();
    }
  });

  test('ABOR while an active-mode connect is still pending answers at once', async () => {
    const server = await startTestServer(local, { dataTimeoutMs: 30_000 });
    const hole = await blackholePort();
    try {
      await put(server, 'abor.txt', Buffer.from('data'));
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect(`PORT 127,0,0,1,${hole.port >> 8},${hole.port & 255}`, 200);
      await raw.expect('RETR abor.txt', 150);
      await sleep(200);
      const started = performance.now();
      raw.socket.write('ABOR\r\n');
      const first = await raw.read(1000);
      assert.ok([425, 426].includes(first.code), `got ${first.code}`);
      assert.equal((await raw.read(1000)).code, 226);
      assert.ok(performance.now() - started < 1000);
      await raw.expect('NOOP', 200);
      raw.close();
    } finally {
      hole.close();
      await server.close();
    }
  });

  test('pipelined AUTH TLS, USER and PASS: nothing behind AUTH runs until it is sent again over TLS', async () => {
    const server = await startTestServer(local, { ftps: testFtps({ implicitPort: undefined }) });
    try {
      const plain = connect({ port: server.port, host: '127.0.0.1' });
      await once(plain, 'connect');
      const raw = RawFtp.over(plain);
      assert.equal((await raw.read()).code, 220);
      plain.write(`AUTH TLS\r\nUSER ${USER}\r\nPASS ${PASSWORD}\r\nMKD injected\r\n`);
      assert.equal((await raw.read()).code, 234);
      plain.removeAllListeners('data');
      const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
      await once(secure, 'secureConnect');
      const ftp = RawFtp.over(secure);
      await ftp.expect('PWD', 530);
      await ftp.expect(`USER ${USER}`, 331);
      await ftp.expect(`PASS ${PASSWORD}`, 230);
      await ftp.expect('PWD', 257);
      await assert.rejects(server.storage.stat('injected'), /no such/);
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('500 trickling connections that never log in are closed at the login deadline; a real client then logs in', async () => {
    const server = await startTestServer(local, { loginTimeoutMs: 3000 });
    const sockets: Socket[] = [];
    try {
      const closed: Array<Promise<unknown>> = [];
      for (let i = 0; i < 500; i++) {
        const socket = connect({ port: server.port, host: '127.0.0.1' });
        socket.on('error', () => {});
        closed.push(new Promise((resolve) => socket.once('close', resolve)));
        sockets.push(socket);
      }
      // One byte every 250 ms: every byte would have reset an idle timer.
      const trickle = setInterval(() => {
        for (const socket of sockets) {
          try {
            if (socket.writable) socket.write('N');
          } catch {
            // closed by the server meanwhile
          }
        }
      }, 250);
      const all = Promise.all(closed);
      const outcome = await Promise.race([all.then(() => 'closed'), sleep(15_000).then(() => 'still open')]);
      clearInterval(trickle);
      assert.equal(outcome, 'closed');
      const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
      assert.equal((await client.send('NOOP')).code, 200);
      client.close();
    } finally {
      for (const socket of sockets) socket.destroy();
      await server.close();
    }
  });
});

/** Resident memory of a process, in MiB. */
function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

describe('session core (server process)', () => {
  test('a 60 s HELP flood from a client that never reads keeps RSS within +32 MiB, during it and after', { timeout: 120_000 }, async () => {
    const server = await startServerProcess(
      childEnv({ FTP_PORT: '0', FTP_USER: USER, FTP_PASSWORD: PASSWORD, DATA_DIR: tempDir(), LOG_LEVEL: 'info' }),
    );
    try {
      const pid = server.child.pid!;
      await stillServesAt(server.port);
      await sleep(500);
      const baseline = rssMiB(pid);
      const flood = connect({ port: server.port, host: '127.0.0.1' });
      flood.on('error', () => {});
      await once(flood, 'connect');
      flood.pause(); // never read a reply
      const chunk = Buffer.from('HELP\r\n'.repeat(10_000));
      const until = Date.now() + 60_000;
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 250);
      while (Date.now() < until && !flood.destroyed) {
        if (!flood.write(chunk)) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, 1000);
            function done(): void {
              clearTimeout(timer);
              flood.off('drain', done);
              resolve();
            }
            flood.once('drain', done);
          });
        }
      }
      flood.destroy();
      await sleep(1000);
      clearInterval(sampler);
      const afterwards = rssMiB(pid);
      assert.ok(peak - baseline <= 32, `RSS rose from ${baseline.toFixed(1)} to a peak of ${peak.toFixed(1)} MiB`);
      assert.ok(afterwards - baseline <= 32, `RSS after the flood: ${afterwards.toFixed(1)} MiB (baseline ${baseline.toFixed(1)})`);
      await stillServesAt(server.port);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('SIGTERM exits 0 when clients reset their connections after the 421, and with an active connect pending', { timeout: 60_000 }, async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'f.txt'), 'data');
    const server = await startServerProcess(
      childEnv({ FTP_PORT: '0', FTP_USER: USER, FTP_PASSWORD: PASSWORD, DATA_DIR: dir, FTP_SHUTDOWN_GRACE: '2', LOG_LEVEL: 'info' }),
    );
    const hole = await blackholePort();
    try {
      const clients = await Promise.all(Array.from({ length: 10 }, () => RawFtp.login(server.port, USER, PASSWORD)));
      for (const client of clients) client.socket.on('data', () => client.socket.resetAndDestroy());
      const pending = await RawFtp.login(server.port, USER, PASSWORD);
      await pending.expect(`PORT 127,0,0,1,${hole.port >> 8},${hole.port & 255}`, 200);
      await pending.expect('RETR f.txt', 150);
      const exited = once(server.child, 'exit') as Promise<[number | null]>;
      server.child.kill('SIGTERM');
      const [code] = await Promise.race([exited, sleep(15_000).then(() => [-1] as [number])]);
      assert.equal(code, 0, server.stderr());
    } finally {
      hole.close();
      await server.stop();
    }
  });
});

async function stillServesAt(port: number): Promise<void> {
  const raw = await RawFtp.login(port, USER, PASSWORD);
  await raw.expect('NOOP', 200);
  raw.close();
}

const s3 = all.find((d) => d.name === 's3')!;

describe('session core (S3 under many transfers)', { skip: s3.skip }, () => {
  test('with 100 concurrent RETRs held open, a LIST in another session answers', { timeout: 120_000 }, async () => {
    const server = await startTestServer(s3);
    const readers: RawFtp[] = [];
    const sockets: Socket[] = [];
    try {
      await put(server, 'held.bin', randomBytes(4 * MiB));
      for (let i = 0; i < 100; i++) {
        const raw = await RawFtp.login(server.port, USER, PASSWORD);
        const data = await raw.passive();
        data.pause(); // never read: the download holds its S3 connection
        await raw.expect('RETR held.bin', 150);
        readers.push(raw);
        sockets.push(data);
      }
      const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
      const listing = await Promise.race([client.list(), sleep(20_000).then(() => undefined)]);
      assert.ok(listing?.some((f) => f.name === 'held.bin'), 'LIST did not answer');
      client.close();
    } finally {
      for (const socket of sockets) socket.destroy();
      for (const raw of readers) raw.close();
      await server.close();
    }
  });

  test('a RETR whose reader pauses for twice the S3 request timeout completes with the right bytes', { timeout: 60_000 }, async () => {
    const slow: Driver = {
      ...s3,
      storageConfig: () => {
        const config = s3.storageConfig();
        return config.kind === 's3' ? { ...config, requestTimeoutMs: 1000 } : config;
      },
    };
    const server = await startTestServer(slow);
    try {
      const content = randomBytes(16 * MiB);
      await put(server, 'paused.bin', content);
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const data = await raw.passive();
      await raw.expect('RETR paused.bin', 150);
      const chunks: Buffer[] = [];
      let paused = false;
      data.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        if (!paused) {
          paused = true;
          data.pause();
          setTimeout(() => data.resume(), 2000);
        }
      });
      await once(data, 'end');
      assert.equal((await raw.read()).code, 226);
      assert.ok(Buffer.concat(chunks).equals(content), 'the bytes differ');
      raw.close();
    } finally {
      await server.close();
    }
  });
});
