import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { connect, Server, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { parsePermissions } from '../src/auth/permissions.js';
import { hashPassword, parsePasswordHash, type User } from '../src/auth/users.js';
import { basicFtp, getFile, RawFtp, readAll, store } from './helpers/ftp.js';
import { drivers, noDanglingUploads, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';

const plain = (name: string, password: string, home: string, permissions?: unknown): User => ({
  name,
  password: { kind: 'plain', value: password },
  home,
  permissions: parsePermissions(permissions),
});

/** Starts an upload (its 150), to be finished by ending the returned data connection. */
async function started(ftp: RawFtp, name: string): Promise<Socket> {
  const data = await ftp.passive();
  await ftp.expect(`STOR ${name}`, 150);
  return data;
}

/** Open file descriptors of this process (the server runs in it). */
const openFds = () => readdirSync('/proc/self/fd').length;

async function settleFds(baseline: number, slack: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  let now = openFds();
  while (now > baseline + slack && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    now = openFds();
  }
  return now;
}

for (const driver of await drivers()) {
  describe(`permissions and confinement (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    const logLines: string[] = [];
    before(async () => {
      server = await startTestServer(
        driver,
        {
          users: [
            plain(USER, PASSWORD, ''),
            plain('partner', 'droppw', 'drops/partner', 'drop-box'),
            plain('reader', 'readpw', '', 'read-only'),
            plain('mixed', 'mixedpw', 'mixed', { '/': 'read-only', '/incoming': ['list', 'write', 'mkdir'] }),
            plain('jail', 'jailpw', 'jail'),
            plain('adder', 'addpw', 'adder', ['list', 'read', 'write', 'append', 'rename']),
          ],
        },
        { logLines },
      );
    });
    after(async () => {
      await server?.close();
    });

    test('a drop box uploads new files and can do nothing else', async () => {
      const ftp = await RawFtp.login(server.port, 'partner', 'droppw');
      assert.equal(await store(ftp, 'invoice.csv', 'a,b\n'), 226);
      assert.equal(await store(ftp, 'invoice.csv', 'overwrite'), 550);
      for (const line of ['LIST', 'NLST', 'MLSD', 'STAT .', 'MLST invoice.csv', 'SIZE invoice.csv', 'RETR invoice.csv', 'DELE invoice.csv', 'RNFR invoice.csv', 'MKD sub', 'RMD x', 'APPE invoice.csv']) {
        const data = line.startsWith('LIST') || line.startsWith('NLST') || line.startsWith('MLSD') || line.startsWith('RETR') || line.startsWith('APPE') ? await ftp.passive() : undefined;
        assert.equal((await ftp.send(line)).code, 550, line);
        data?.destroy();
      }
      assert.equal(await store(ftp, 'other.csv', 'x', 2), 550, 'REST+STOR needs append');
      ftp.close();
      const admin = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal((await admin.expect('SIZE drops/partner/invoice.csv', 213)).text, '4');
      admin.close();
      const denied = logLines.map((l) => JSON.parse(l)).filter((e) => e.event === 'permission-denied' && e.user === 'partner');
      assert.ok(denied.some((e) => e.permission === 'read' && e.path === '/invoice.csv'), 'the log says why');
    });

    test('without delete, nothing is overwritten: STOR and RNTO onto a file are refused, APPE is allowed', async () => {
      const ftp = await RawFtp.login(server.port, 'adder', 'addpw');
      assert.equal(await store(ftp, 'log.txt', 'one\n'), 226);
      assert.equal(await store(ftp, 'other.txt', 'other\n'), 226);
      assert.equal(await store(ftp, 'log.txt', 'replaced\n'), 550);
      const data = await ftp.passive();
      await ftp.expect('APPE log.txt', 150);
      data.end('two\n');
      assert.equal((await ftp.read()).code, 226);
      await ftp.expect('RNFR other.txt', 350);
      await ftp.expect('RNTO log.txt', 550);
      await ftp.expect('RNFR other.txt', 350);
      await ftp.expect('RNTO renamed.txt', 250);
      const back = await ftp.passive();
      await ftp.expect('RETR log.txt', 150);
      assert.equal((await readAll(back)).toString(), 'one\ntwo\n');
      assert.equal((await ftp.read()).code, 226);
      ftp.close();
    });

    test('read-only users read and list; per-directory rules override', async () => {
      const reader = await RawFtp.login(server.port, 'reader', 'readpw');
      assert.equal(await store(reader, 'nope.txt', 'x'), 550);
      await reader.expect('MKD nope', 550);
      await reader.expect('MKD drops', 550);
      await reader.expect('SIZE drops/partner/invoice.csv', 213);
      const data = await reader.passive();
      await reader.expect('RETR drops/partner/invoice.csv', 150);
      assert.equal((await readAll(data)).toString(), 'a,b\n');
      assert.equal((await reader.read()).code, 226);
      reader.close();
      // / is read-only, so mixed could never MKD incoming: the login made it.
      const mixed = await RawFtp.login(server.port, 'mixed', 'mixedpw');
      assert.equal(await store(mixed, 'top.txt', 'x'), 550);
      await mixed.expect('MKD other', 550);
      await mixed.expect('MKD incoming/batch', 257);
      assert.equal(await store(mixed, 'incoming/batch/file.txt', 'ok'), 226);
      await mixed.expect('DELE incoming/batch/file.txt', 550);
      // RFC 3659 perm facts say what this user may do there, not what anyone could.
      const fact = async (path: string) => /perm=([a-z]*);/.exec((await mixed.expect(`MLST ${path}`, 250)).lines[1] ?? '')?.[1];
      // No w on the file: a STOR onto it would replace it, which takes delete too.
      assert.equal(await fact('incoming/batch/file.txt'), '');
      assert.equal(await fact('incoming/batch'), 'lcme');
      assert.equal(await fact('/'), 'le');
      const listing = await mixed.passive();
      await mixed.expect('MLSD incoming/batch', 150);
      assert.match((await readAll(listing)).toString(), /^type=file;.*perm=;.* file\.txt\r\n/m);
      assert.equal((await mixed.read()).code, 226);
      mixed.close();
      const admin = await RawFtp.login(server.port, USER, PASSWORD);
      assert.match((await admin.expect('MLST mixed/incoming/batch/file.txt', 250)).lines[1] ?? '', /perm=adfrw;/);
      // The root is never renamed or removed, whatever the rules.
      assert.match((await admin.expect('MLST /', 250)).lines[1] ?? '', /perm=lcmpe;/);
      admin.close();
    });

    test('no traversal corpus entry reaches outside the home', async () => {
      const admin = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal(await store(admin, 'outside-secret.txt', 'TOP SECRET'), 226);
      admin.close();
      const snapshot = async () => {
        const keys: string[] = [];
        const walk = async (dir: string): Promise<void> => {
          for await (const page of server.storage.list(dir)) {
            for (const e of page) {
              const path = dir ? `${dir}/${e.name}` : e.name;
              if (path === 'jail') continue;
              keys.push(path);
              if (e.isDirectory) await walk(path);
            }
          }
        };
        await walk('');
        return keys.sort();
      };
      const before = await snapshot();
      const corpus = [
        '..', '../', '../..', '/..', '/../..', '../outside-secret.txt', '../../outside-secret.txt',
        '/../outside-secret.txt', 'a/../../outside-secret.txt', './../outside-secret.txt', '.../outside-secret.txt',
        '..%2foutside-secret.txt', '%2e%2e/outside-secret.txt', '%2e%2e%2foutside-secret.txt', '..%5coutside-secret.txt',
        '..\\outside-secret.txt', '..\\..\\outside-secret.txt', 'a\\..\\..\\outside-secret.txt', '\\outside-secret.txt',
        'x\0y', '..\0/outside-secret.txt', `${'n'.repeat(1100)}`, `/${'d/'.repeat(600)}f`, '~/outside-secret.txt',
        '~root', '//outside-secret.txt', '/jail/../outside-secret.txt', '../jail/../../outside-secret.txt', '\u002e\u002e/outside-secret.txt',
        '..\u2215outside-secret.txt', '．．/outside-secret.txt',
      ];
      const jail = await RawFtp.login(server.port, 'jail', 'jailpw');
      for (const entry of corpus) {
        for (const verb of ['CWD', 'MKD', 'RMD', 'DELE', 'SIZE', 'MDTM', 'MLST', 'RNFR']) {
          const reply = await jail.send(`${verb} ${entry}`);
          assert.ok([250, 257, 350, 550, 553, 213].includes(reply.code), `${verb} ${JSON.stringify(entry)}: ${reply.code}`);
          if (reply.code === 350) await jail.send('RNTO renamed-by-corpus');
          await jail.send('CWD /');
        }
        const data = await jail.passive();
        const retr = await jail.send(`RETR ${entry}`);
        if (retr.code === 150) {
          assert.ok(!(await readAll(data)).toString().includes('TOP SECRET'), entry);
          await jail.read();
        } else {
          data.destroy();
          assert.ok([550, 553].includes(retr.code), `RETR ${JSON.stringify(entry)}: ${retr.code}`);
        }
        assert.ok([226, 550, 553].includes(await store(jail, entry, 'planted')), `STOR ${JSON.stringify(entry)}`);
      }
      for (const long of [`${'n'.repeat(1100)}`, `/${'d/'.repeat(600)}f`, 'x\0y', '..\\outside-secret.txt']) {
        assert.equal((await jail.send(`MKD ${long}`)).code, 553, JSON.stringify(long.slice(0, 20)));
      }
      jail.close();
      assert.deepEqual(await snapshot(), before, 'nothing outside the home changed');
    });
  });
}

const [local] = await drivers();

describe('abuse limits (local)', () => {
  test('connections are capped in total and per address (421)', async () => {
    const server = await startTestServer(local!, {
      limits: { maxConnections: 3, maxConnectionsPerAddress: 2, maxLoginFailures: 100, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 500 },
    });
    try {
      const a = await RawFtp.connect(server.port);
      const b = await RawFtp.connect(server.port);
      const c = connect({ port: server.port, host: '127.0.0.1' });
      const [greeting] = (await once(c, 'data')) as [Buffer];
      assert.match(greeting.toString(), /^421 /);
      a.close();
      await new Promise((r) => setTimeout(r, 100));
      const d = await RawFtp.connect(server.port);
      await d.expect('NOOP', 200);
      b.close();
      d.close();
      c.destroy();
    } finally {
      await server.close();
    }
  });

  test('repeated failed logins lock the address out (421), and the log names it', async () => {
    const logLines: string[] = [];
    const server = await startTestServer(
      local!,
      { limits: { maxConnections: 100, maxConnectionsPerAddress: 100, maxLoginFailures: 3, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 500 } },
      { logLines },
    );
    try {
      for (let i = 0; i < 2; i++) {
        const ftp = await RawFtp.connect(server.port);
        await ftp.expect(`USER ${USER}`, 331);
        await ftp.expect('PASS wrong', 530);
        ftp.close();
      }
      const third = await RawFtp.connect(server.port);
      await third.expect(`USER ${USER}`, 331);
      await third.expect('PASS wrong', 421);
      const next = connect({ port: server.port, host: '127.0.0.1' });
      const [greeting] = (await once(next, 'data')) as [Buffer];
      assert.match(greeting.toString(), /^421 Too many failed logins/);
      next.destroy();
      // The session's logger names the client once; the line repeats no key.
      const lockout = logLines.find((l) => /"event":"lockout"/.test(l));
      assert.match(lockout ?? '', /"client":"127\.0\.0\.1"/);
      assert.equal(lockout?.match(/"client":/g)?.length, 1);
    } finally {
      await server.close();
    }
  });

  test('over-long lines get 500, and the third closes the connection', async () => {
    const server = await startTestServer(local!);
    try {
      const ftp = await RawFtp.connect(server.port);
      for (let i = 0; i < 2; i++) {
        ftp.socket.write(`${'X'.repeat(5000)}\r\n`);
        assert.equal((await ftp.read()).code, 500);
      }
      ftp.socket.write(`${'X'.repeat(5000)}\r\n`);
      assert.equal((await ftp.read()).code, 421);
      assert.equal((await ftp.read()).code, 0, 'closed');
    } finally {
      await server.close();
    }
  });

  test('idle control connections and stalled data connections time out', async () => {
    const server = await startTestServer(local!, { idleTimeoutMs: 500, dataTimeoutMs: 500 });
    try {
      const idle = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal((await idle.read(5000)).code, 421);
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      // A passive port no transfer command claims is given back after the data timeout.
      const unclaimed = Number(/\|\|\|(\d+)\|/.exec((await ftp.expect('EPSV', 229)).text)![1]);
      await new Promise((r) => setTimeout(r, 400));
      await ftp.expect('NOOP', 200); // the control connection is not idle
      await new Promise((r) => setTimeout(r, 400));
      const probe = connect({ port: unclaimed, host: '127.0.0.1' });
      const [err] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
      assert.equal(err.code, 'ECONNREFUSED');
      // The channel is gone: a transfer command is told at once, with no 150 first.
      await ftp.expect('LIST', 425);
      await ftp.expect('EPSV', 229);
      await ftp.expect('LIST', 150); // the client never connects
      assert.equal((await ftp.read(5000)).code, 425);
      const data = await ftp.passive();
      await ftp.expect('STOR stalled.bin', 150);
      data.write('a few bytes, then nothing');
      assert.equal((await ftp.read(5000)).code, 426);
      await ftp.expect('SIZE stalled.bin', 550);
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('a full passive range answers 425 without trying every port again, and a port is free once its listener has its connection', async () => {
    const limits = { maxConnections: 100, maxConnectionsPerAddress: 100, maxLoginFailures: 100, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 0 };
    // Below Linux's ephemeral ports, so no outgoing connection of another process holds one of them.
    const server = await startTestServer(local!, { pasvPorts: { min: 31110, max: 31139 }, limits });
    // Counts the binds this process attempts (the server runs in it).
    const listen = Server.prototype.listen;
    let binds = 0;
    Server.prototype.listen = function (this: Server, ...args: unknown[]) {
      binds++;
      return (listen as (...a: unknown[]) => Server).apply(this, args);
    } as typeof listen;
    const sessions: RawFtp[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const ftp = await RawFtp.login(server.port, USER, PASSWORD);
        await ftp.expect('EPSV', 229);
        sessions.push(ftp);
      }
      const late = await RawFtp.login(server.port, USER, PASSWORD);
      binds = 0;
      await late.expect('EPSV', 425);
      await late.expect('PASV', 425);
      assert.equal(binds, 0, 'no port the server itself listens on is tried');
      // A listener that took its connection gives its port back: the transfer keeps its socket.
      const first = sessions[0]!;
      const data = await first.passive();
      await first.expect('STOR held.bin', 150);
      const reply = await late.expect('EPSV', 229);
      assert.match(reply.text, /\|\|\|311[1-3]\d\|/);
      data.end('still sending');
      assert.equal((await first.read()).code, 226);
      late.close();
    } finally {
      Server.prototype.listen = listen;
      for (const ftp of sessions) ftp.close();
      await server.close();
    }
  });

  test('a passive data connection from another address is refused', async () => {
    const server = await startTestServer(local!);
    try {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal(await store(ftp, 'hijack.txt', 'mine'), 226);
      const reply = await ftp.expect('EPSV', 229);
      const port = Number(/\|\|\|(\d+)\|/.exec(reply.text)![1]);
      const thief = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      thief.on('error', () => {});
      await ftp.expect('RETR hijack.txt', 150);
      assert.equal((await readAll(thief)).length, 0, 'the thief got nothing');
      const data = connect({ port, host: '127.0.0.1' });
      assert.equal((await readAll(data)).toString(), 'mine');
      assert.equal((await ftp.read()).code, 226);
      ftp.close();
    } finally {
      await server.close();
    }
  });

  test('10,000 PASV commands in a row leak no listener', async () => {
    const server = await startTestServer(local!);
    try {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      const baseline = openFds();
      for (let i = 0; i < 10_000; i++) {
        ftp.socket.write('PASV\r\n');
        if (i % 100 === 99) {
          for (let j = 0; j < 100; j++) assert.equal((await ftp.read()).code, 227);
        }
      }
      ftp.close();
      assert.ok((await settleFds(baseline, 5)) <= baseline + 5, `fds ${baseline} -> ${openFds()}`);
    } finally {
      await server.close();
    }
  });
});

for (const driver of await drivers()) {
  describe(`resources and load (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver);
    });
    after(async () => {
      await server?.close();
    });

    test('aborted transfers free every socket and file descriptor', async () => {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      assert.equal(await store(ftp, 'abort-me.bin', randomBytes(1024 * 1024)), 226);
      const baseline = openFds();
      const rounds = driver.name === 'local' ? 1000 : 300;
      for (let i = 0; i < rounds; i++) {
        const data = await ftp.passive();
        if (i % 2) {
          await ftp.expect('RETR abort-me.bin', 150);
          data.resetAndDestroy();
        } else {
          await ftp.expect('STOR aborted-upload.bin', 150);
          data.write(randomBytes(1024));
          data.resetAndDestroy();
        }
        assert.ok([226, 426, 451].includes((await ftp.read()).code));
      }
      await ftp.expect('NOOP', 200);
      ftp.close();
      const after = await settleFds(baseline, 10);
      assert.ok(after <= baseline + 10, `fds ${baseline} -> ${after} after ${rounds} aborted transfers`);
      assert.deepEqual(await driver.danglingUploads(server.storageConfig), []);
    });

    test('200 concurrent sessions of mixed STOR, RETR and LIST keep every byte', async () => {
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const results = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
          try {
            const body = randomBytes(16 * 1024 + i);
            await client.uploadFrom(Readable.from([body]), `load-${i}.bin`);
            const listed = await client.list();
            const chunks: Buffer[] = [];
            await client.downloadTo(
              new Writable({
                write(c: Buffer, _e, done) {
                  chunks.push(c);
                  done();
                },
              }),
              `load-${i}.bin`,
            );
            return listed.some((e) => e.name === `load-${i}.bin`) && sha(Buffer.concat(chunks)) === sha(body);
          } finally {
            client.close();
          }
        }),
      );
      assert.equal(results.filter(Boolean).length, 200);
    });
  });
}

for (const driver of await drivers()) {
  describe(`the README's drop-box example (${driver.name})`, { skip: driver.skip }, () => {
    test('a partner whose /incoming is a drop box finds it created at first login and uploads into it', async () => {
      const server = await startTestServer(driver, {
        users: [plain('partner', 'droppw', 'drops/partner', { '/': 'read-only', '/incoming': 'drop-box' })],
      });
      try {
        const ftp = await RawFtp.login(server.port, 'partner', 'droppw');
        await ftp.expect('CWD /incoming', 250);
        assert.equal(await store(ftp, 'report.csv', 'a,b\n'), 226);
        await ftp.expect('MKD /other', 550);
        ftp.close();
        assert.equal((await server.storage.stat('drops/partner/incoming/report.csv')).size, 4);
      } finally {
        await server.close();
      }
    });
  });
}

for (const driver of await drivers()) {
  describe(`drop boxes learn nothing about existing names (${driver.name})`, { skip: driver.skip }, () => {
    test('error texts do not depend on what exists; dropBoxOnExisting "rename" stores a taken name under a free one', async () => {
      const renaming: User = { ...plain('renamer', 'renamepw', 'drop', 'drop-box'), dropBoxOnExisting: 'rename' };
      const server = await startTestServer(driver, {
        users: [plain(USER, PASSWORD, ''), plain('partner', 'droppw', 'drop', 'drop-box'), renaming, plain('bob', 'bobpw', '', { '/': 'full', '/drop': 'drop-box' }), plain('reader', 'readerpw', '', ['read'])],
      });
      try {
        const partner = await RawFtp.login(server.port, 'partner', 'droppw');
        assert.equal(await store(partner, 'report.csv', 'first'), 226);
        const texts = new Set<string>();
        // Setting a time: MDTM's preflight had checked "<time> <path>" as one path, which lay outside
        // the drop box, and MFMT checked write only. Got: 213 for report.csv (its time changed), 550 "No such file" for nosuch.
        const timeSetting = ['MDTM 20000101000000 report.csv', 'MDTM 20000101000000 nosuch', ...(driver.name === 'local' ? ['MFMT 20000101000000 report.csv', 'MFMT 20000101000000 nosuch'] : [])];
        for (const line of ['CWD report.csv', 'CWD nosuch', 'SIZE report.csv', 'SIZE nosuch', 'DELE report.csv', 'DELE nosuch', 'RNFR report.csv', 'RNFR nosuch', ...timeSetting]) {
          const reply = await partner.send(line);
          assert.equal(reply.code, 550, line);
          texts.add(reply.text);
        }
        assert.deepEqual([...texts], ['Requested action not taken.']);
        // The same for a drop box below a directory the user may list.
        const bob = await RawFtp.login(server.port, 'bob', 'bobpw');
        const bobTexts = new Set<string>();
        for (const line of ['MDTM 20000101000000 /drop/report.csv', 'MDTM 20000101000000 /drop/nosuch', 'SIZE /drop/report.csv', 'SIZE /drop/nosuch']) {
          const reply = await bob.send(line);
          assert.equal(reply.code, 550, line);
          bobTexts.add(reply.text);
        }
        assert.deepEqual([...bobTexts], ['Requested action not taken.']);
        bob.close();
        // A user who may read but not list: HASH, which runs as a transfer, tells nothing either.
        // Got: "Is a directory." and "No such file or directory.".
        const reader = await RawFtp.login(server.port, 'reader', 'readerpw');
        const readerTexts = new Set<string>();
        for (const line of ['HASH /drop', 'HASH /nosuch']) {
          const reply = await reader.send(line);
          assert.equal(reply.code, 550, line);
          readerTexts.add(reply.text);
        }
        assert.deepEqual([...readerTexts], ['Requested action not taken.']);
        assert.equal((await reader.send('HASH /drop/report.csv')).code, 213);
        reader.close();
        // The default, "refuse", is documented as telling that the name exists.
        assert.equal(await store(partner, 'report.csv', 'again'), 550);
        const long = `${'l'.repeat(251)}.csv`;
        assert.equal(await store(partner, long, 'long'), 226);
        const longExt = `a.${'e'.repeat(253)}`;
        assert.equal(await store(partner, longExt, 'long extension'), 226);
        partner.close();

        const renamer = await RawFtp.login(server.port, 'renamer', 'renamepw');
        for (const [content, stored] of [['second', 'report (1).csv'], ['third', 'report (2).csv']] as const) {
          const data = await started(renamer, 'report.csv');
          data.end(content);
          const done = await renamer.read();
          assert.equal(done.code, 226);
          assert.equal(done.text, `Transfer complete; stored as "${stored}".`);
        }
        // A taken name too long for " (1)" is shortened, not refused: 553 for a taken name against
        // 226 for a free one of the same length told which names exist.
        const data = await started(renamer, long);
        data.end('long again');
        const done = await renamer.read();
        assert.equal(done.code, 226, done.text);
        assert.equal(done.text, `Transfer complete; stored as "${'l'.repeat(247)} (1).csv".`);
        // An extension too long for " (1)" beside it is shortened too.
        const second = await started(renamer, longExt);
        second.end('long extension again');
        const stored = await renamer.read();
        assert.equal(stored.code, 226, stored.text);
        assert.equal(stored.text, `Transfer complete; stored as "a.${'e'.repeat(249)} (1)".`);
        renamer.close();
        const read = async (name: string) => (await getFile(server.port, USER, PASSWORD, `drop/${name}`)).toString();
        assert.deepEqual([await read('report.csv'), await read('report (1).csv'), await read('report (2).csv')], ['first', 'second', 'third']);
        assert.equal(await read(`${'l'.repeat(247)} (1).csv`), 'long again');
      } finally {
        await server.close();
      }
    });
  });
}

for (const driver of await drivers()) {
  describe(`a drop box never replaces a file, even racing another upload (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver, {
        users: [
          plain(USER, PASSWORD, ''),
          plain('partner', 'droppw', 'drop', 'drop-box'),
          { ...plain('renamer', 'renamepw', 'drop', 'drop-box'), dropBoxOnExisting: 'rename' },
        ],
      });
    });
    after(async () => {
      await server?.close();
    });
    const read = async (name: string) => (await getFile(server.port, USER, PASSWORD, `drop/${name}`)).toString();

    // Small bodies are one PutObject on S3; 6 MiB ones a multipart upload, published by its completion.
    for (const size of [8, 6 * 1024 * 1024]) {
      const body = (tag: string) => Buffer.alloc(size, tag);
      test(`"rename": two uploads of one name at once are both kept, under two names (${size} bytes)`, async () => {
        const name = `twice-${size}.csv`;
        // Logged in first: a drop box's home is made at its first login.
        const [a, b] = [await RawFtp.login(server.port, 'renamer', 'renamepw'), await RawFtp.login(server.port, 'renamer', 'renamepw')];
        assert.equal(await store(await RawFtp.login(server.port, USER, PASSWORD), `drop/${name}`, 'taken'), 226);
        // Both are answered 150 before either stores: both had found "(1)" free.
        const [da, db] = [await started(a, name), await started(b, name)];
        db.end(body('b'));
        const doneB = await b.read();
        da.end(body('a'));
        const doneA = await a.read();
        // Got: 226 'stored as "twice (1).csv"' twice, and only one of the two bodies in the drop box.
        assert.deepEqual([doneA.code, doneB.code], [226, 226]);
        const stem = name.slice(0, -4);
        assert.deepEqual([doneA.text, doneB.text].sort(), [`Transfer complete; stored as "${stem} (1).csv".`, `Transfer complete; stored as "${stem} (2).csv".`]);
        const stored = (text: string) => /"(.*)"/.exec(text)![1]!;
        assert.ok((await read(stored(doneA.text))) === body('a').toString());
        assert.ok((await read(stored(doneB.text))) === body('b').toString());
        assert.equal(await read(name), 'taken');
        a.close();
        b.close();
        await noDanglingUploads(driver, server);
      });

      test(`a drop box's upload to a free name loses to a file stored there meanwhile: 451, and that file stays (${size} bytes)`, async () => {
        const name = `raced-${size}.txt`;
        for (const [user, password] of [['partner', 'droppw'], ['renamer', 'renamepw']] as const) {
          const partner = await RawFtp.login(server.port, user, password);
          const data = await started(partner, name);
          data.write(body('p').subarray(0, 4));
          const owner = await RawFtp.login(server.port, USER, PASSWORD);
          assert.equal(await store(owner, `drop/${name}`, `owner's ${user}`), 226);
          data.end(body('p').subarray(4));
          // Got: 226, and the owner's file held the partner's bytes (a drop box may not replace a file).
          assert.equal((await partner.read()).code, 451, user);
          assert.equal(await read(name), `owner's ${user}`);
          await owner.expect(`DELE drop/${name}`, 250);
          partner.close();
          owner.close();
        }
        await noDanglingUploads(driver, server);
      });
    }

    test('"rename": a taken name that fills the whole key is numbered within it, not refused', async () => {
      const owner = await RawFtp.login(server.port, USER, PASSWORD);
      const renamer = await RawFtp.login(server.port, 'renamer', 'renamepw');
      const dirs = ['a', 'b', 'c', 'd'].map((c) => c.repeat(200));
      for (let i = 1; i <= dirs.length; i++) await owner.expect(`MKD /drop/${dirs.slice(0, i).join('/')}`, 257);
      const config = server.storageConfig;
      const keyBase = `${config.kind === 's3' ? `${config.prefix}/` : ''}drop/${dirs.join('/')}/`;
      // The longest key a file may have: 1023 bytes (S3 also looks at `name/`).
      const name = `${'n'.repeat(1023 - Buffer.byteLength(keyBase) - 4)}.csv`;
      const path = `/${dirs.join('/')}/${name}`;
      assert.equal(await store(renamer, path, 'first'), 226);
      const data = await started(renamer, path);
      data.end('second');
      // Got: 553 "path too long" for the taken name, where a free one of its length got 226.
      const done = await renamer.read();
      assert.equal(done.code, 226, done.text);
      assert.match(done.text, /^Transfer complete; stored as "n+ \(1\)\.csv"\.$/);
      owner.close();
      renamer.close();
    });

    test('"refuse": while one upload of a free name runs, another of the same name is refused (550) and the first is kept', async () => {
      const [a, b] = [await RawFtp.login(server.port, 'partner', 'droppw'), await RawFtp.login(server.port, 'partner', 'droppw')];
      const data = await started(a, 'claimed.csv');
      const second = await b.passive();
      assert.equal((await b.send('STOR claimed.csv')).code, 550);
      second.destroy();
      data.end('first');
      assert.equal((await a.read()).code, 226);
      assert.equal(await read('claimed.csv'), 'first');
      // Its claim ends with the upload: the name is now simply taken.
      assert.equal(await store(b, 'claimed.csv', 'again'), 550);
      a.close();
      b.close();
    });
  });
}

describe('login timing', () => {
  test('a flood of wrong passwords from one address costs the checks before its lockout, not one per connection', async () => {
    const [local] = await drivers();
    const server = await startTestServer(local!, {
      users: [{ name: 'filed', password: parsePasswordHash(await hashPassword('filedpw')), home: '' }],
      limits: { maxConnections: 100, maxConnectionsPerAddress: 100, maxLoginFailures: 3, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 0 },
    });
    const wrongLogin = async (from: string): Promise<number> => {
      const ftp = await RawFtp.connect(server.port, '127.0.0.1', from);
      await ftp.expect('USER filed', 331);
      const { code } = await ftp.send('PASS wrong');
      ftp.close();
      return code;
    };
    const cpu = (): number => {
      const { user, system } = process.cpuUsage(); // the whole process: the thread pool's scrypt included
      return user + system;
    };
    try {
      // What one check costs here, from an address that stays under the lockout (after one to warm up).
      assert.equal(await wrongLogin('127.0.0.2'), 530);
      let before = cpu();
      for (let i = 0; i < 2; i++) assert.equal(await wrongLogin('127.0.0.4'), 530);
      const one = (cpu() - before) / 2;
      // 30 connections send a wrong password at once: the third failure locks the address out,
      // and the checks still waiting for their turn then have nothing to decide.
      const flood = await Promise.all(
        Array.from({ length: 30 }, async () => {
          const ftp = await RawFtp.connect(server.port, '127.0.0.1', '127.0.0.3');
          await ftp.expect('USER filed', 331);
          return ftp;
        }),
      );
      before = cpu();
      const codes = await Promise.all(flood.map((ftp) => ftp.send('PASS wrong')));
      const spent = cpu() - before;
      for (const ftp of flood) ftp.close();
      assert.ok(codes.every(({ code }) => code === 530 || code === 421), codes.map((c) => c.code).join());
      assert.ok(codes.filter(({ code }) => code === 421).length >= 27, 'every reply after the lockout is 421');
      // The checks that run are the lockout's three and the two already in their slots when it came (a slot
      // passes on before the finished check records its failure): five, where every connection's ran before
      // (30). Counted in checks' worth of CPU, with room for this machine's noise.
      assert.ok(spent < 12 * one, `the flood cost ${(spent / one).toFixed(1)} checks' worth of CPU`);
      // Another address still logs in.
      (await RawFtp.login(server.port, 'filed', 'filedpw')).close();
    } finally {
      await server.close();
    }
  });

  test('a failed PASS costs as much for the plain FTP_USER as for a users-file name or an unknown one', async () => {
    const [local] = await drivers();
    const server = await startTestServer(local!, {
      // As combineUsers orders them: the users file's scrypt hashes first, then FTP_USER.
      users: [
        { name: 'filed', password: parsePasswordHash(await hashPassword('filedpw')), home: '' },
        { name: 'ops', password: { kind: 'plain', value: 'opspw' }, home: '' },
      ],
      limits: { maxConnections: 100, maxConnectionsPerAddress: 100, maxLoginFailures: 1000, loginFailureWindowMs: 60_000, lockoutMs: 60_000, failedLoginDelayMs: 0 },
    });
    try {
      const took: Record<string, number[]> = { ops: [], filed: [], nobody: [] };
      for (let round = 0; round < 5; round++) {
        for (const name of Object.keys(took)) {
          const ftp = await RawFtp.connect(server.port);
          await ftp.expect(`USER ${name}`, 331);
          const started = performance.now();
          await ftp.expect('PASS wrong-password', 530);
          took[name]!.push(performance.now() - started);
          ftp.close();
        }
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[2]!;
      const [ops, filed, nobody] = [median(took.ops!), median(took.filed!), median(took.nobody!)];
      // Without the decoy's scrypt, ops answered in about 2 ms against about 30 for the others.
      assert.ok(ops >= 0.4 * Math.min(filed, nobody), `median ms: ops ${ops.toFixed(1)}, filed ${filed.toFixed(1)}, unknown ${nobody.toFixed(1)}`);
      const ok = await RawFtp.login(server.port, 'ops', 'opspw');
      ok.close();
    } finally {
      await server.close();
    }
  });
});
