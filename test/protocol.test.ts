import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { putFile, RawFtp, readAll } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';

for (const driver of await drivers()) {
  describe(`protocol replies (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let ftp: RawFtp;
    before(async () => {
      server = await startTestServer(driver);
      ftp = await RawFtp.login(server.port, USER, PASSWORD);
    });
    after(async () => {
      ftp?.close();
      await server?.close();
    });

    test('the session status names no bucket, prefix, endpoint or directory', async () => {
      const text = (await ftp.expect('STAT', 211)).lines.join('\n');
      const storage = server.storageConfig;
      const secrets = storage.kind === 's3' ? [storage.bucket, storage.prefix, storage.endpoint ?? ''] : [storage.dataDir];
      for (const secret of secrets.filter((s) => s !== '')) assert.ok(!text.includes(secret), `STAT shows ${secret}:\n${text}`);
      assert.doesNotMatch(text, /bucket|\bS3\b|local directory|storage/i);
      assert.match(text, /Logged in as alice/);
    });

    test('only USER, PASS, QUIT, FEAT, SYST, HELP, NOOP, OPTS and AUTH work before login', async () => {
      const anon = await RawFtp.connect(server.port);
      for (const line of ['PWD', 'CWD /', 'LIST', 'MKD x', 'STAT', 'TYPE I', 'PASV', 'EPSV', 'RETR x', 'STOR x', 'DELE x', 'SIZE x', 'PBSZ 0', 'SITE HELP']) {
        assert.equal((await anon.send(line)).code, 530, line);
      }
      // Windows Explorer and ftp.exe send it before USER, and read a refusal as "no UTF-8" (vsftpd answers it there too).
      assert.equal((await anon.send('OPTS UTF8 ON')).code, 200);
      assert.equal((await anon.send('SYST')).code, 215);
      assert.equal((await anon.send('NOOP')).code, 200);
      assert.equal((await anon.send('FEAT')).code, 211);
      assert.equal((await anon.send('HELP')).code, 214);
      assert.equal((await anon.send('AUTH TLS')).code, 502);
      assert.equal((await anon.send('PASS nothing')).code, 503, 'PASS before USER');
      assert.equal((await anon.send('USER')).code, 501, 'USER without a name');
      assert.equal((await anon.send('BOGUS')).code, 500);
      assert.equal((await anon.send('QUIT')).code, 221);
      anon.close();
    });

    test('a wrong password gets 530 and the session stays logged out', async () => {
      const anon = await RawFtp.connect(server.port);
      await anon.expect(`USER ${USER}`, 331);
      await anon.expect('PASS wrong', 530);
      await anon.expect('PWD', 530);
      await anon.expect('USER nobody', 331);
      await anon.expect(`PASS ${PASSWORD}`, 530);
      anon.close();
    });

    test('FEAT lists the extensions, HELP the commands', async () => {
      const feat = await ftp.expect('FEAT', 211);
      const features = feat.lines.slice(1, -1).map((l) => l.trim());
      for (const f of ['EPRT', 'EPSV', 'MDTM', 'PASV', 'REST STREAM', 'SIZE', 'UTF8', 'TVFS']) assert.ok(features.includes(f), f);
      assert.ok(features.some((f) => f.startsWith('MLST type*;size*;modify*;perm*;unique*;')));
      assert.ok(feat.lines[0]!.startsWith('211-') && feat.lines.at(-1)!.startsWith('211 '));
      const help = await ftp.expect('HELP', 214);
      assert.ok(help.lines.join(' ').includes('RETR'));
      assert.equal((await ftp.send('HELP RETR')).code, 214);
      assert.equal((await ftp.send('HELP NOSUCH')).code, 501);
    });

    test('unknown verbs get 500, unimplemented ones 502, bad arguments 501', async () => {
      assert.equal((await ftp.send('XYZZY')).code, 500);
      for (const verb of ['SITE CHMOD 777 x', 'STOU', 'ACCT x', 'REIN', 'SMNT x', 'LPSV']) {
        assert.equal((await ftp.send(verb)).code, 502, verb);
      }
      for (const line of ['CWD', 'MKD', 'RMD', 'DELE', 'RNFR', 'RETR', 'STOR', 'SIZE', 'MDTM', 'REST', 'REST abc', 'REST -1', 'TYPE', 'TYPE X', 'MODE Z', 'STRU Q', 'PWD extra', 'PORT 1,2,3', 'PORT a,b,c,d,e,f', 'EPRT garbage', 'OPTS NOPE']) {
        assert.equal((await ftp.send(line)).code, 501, line);
      }
    });

    test('TYPE, MODE, STRU, ALLO, OPTS and SYST', async () => {
      for (const line of ['TYPE A', 'TYPE A N', 'TYPE L 8', 'TYPE I', 'MODE S', 'STRU F', 'OPTS UTF8 ON']) {
        assert.equal((await ftp.send(line)).code, 200, line);
      }
      for (const line of ['TYPE E', 'TYPE A T', 'MODE B', 'STRU R']) {
        assert.equal((await ftp.send(line)).code, 504, line);
      }
      assert.equal((await ftp.send('ALLO 1000')).code, 202);
      assert.equal((await ftp.send('SYST')).text, 'UNIX Type: L8');
    });

    test('navigation: PWD, CWD, CDUP and their X aliases', async () => {
      await ftp.expect('MKD nav', 257);
      await ftp.expect('MKD nav/inner dir', 257);
      await ftp.expect('CWD nav', 250);
      assert.equal((await ftp.expect('PWD', 257)).text, '"/nav" is the current directory.');
      await ftp.expect('XCWD inner dir', 250);
      assert.equal((await ftp.expect('XPWD', 257)).text, '"/nav/inner dir" is the current directory.');
      await ftp.expect('CDUP', 250);
      await ftp.expect('XCUP', 250);
      assert.equal((await ftp.expect('PWD', 257)).text, '"/" is the current directory.');
      await ftp.expect('CWD /nosuch', 550);
      await ftp.expect('CWD /', 250);
    });

    test('paths never lead above the root', async () => {
      for (const arg of ['..', '../..', '/../..', 'nav/../../..', './../.', '//..//..']) {
        await ftp.expect(`CWD ${arg}`, 250);
        assert.equal((await ftp.expect('PWD', 257)).text, '"/" is the current directory.', arg);
      }
      await ftp.expect('CWD /nav/../../../nav', 250);
      assert.equal((await ftp.expect('PWD', 257)).text, '"/nav" is the current directory.');
      await ftp.expect('CWD /', 250);
      await ftp.expect('CWD /../../etc', 550);
      await ftp.expect('SIZE ../../../etc/passwd', 550);
      // A backslash is an ordinary character, except in names a Windows client would take as a way out.
      await ftp.expect('MKD a\\b', 257);
      await ftp.expect('RMD a\\b', 250);
      await ftp.expect('MKD ..\\b', 553);
      await ftp.expect('MKD \\b', 553);
      await ftp.expect('MKD C:\\b', 553);
      await ftp.expect(`MKD ${'x'.repeat(300)}`, 553);
      await ftp.expect(`MKD ${Array(120).fill('abcdefghi').join('/')}`, 553);
    });

    test('file and directory errors: 550, 553 and 503', async () => {
      await ftp.expect('DELE nosuch', 550);
      await ftp.expect('RMD nosuch', 550);
      await ftp.expect('SIZE nosuch', 550);
      await ftp.expect('MDTM nosuch', 550);
      await ftp.expect('RNFR nosuch', 550);
      await ftp.expect('RNTO whatever', 503);
      await ftp.expect('MLST nosuch', 550);
      await ftp.expect('MKD errs', 257);
      await ftp.expect('MKD errs', 550);
      await ftp.expect('MKD nosuch/child', 550);
      await ftp.expect('SIZE errs', 550);
      await ftp.expect('DELE errs', 550);
      await ftp.expect('RMD errs', 250);
      await ftp.expect('RMD /', 550);
      await ftp.expect('RNFR /', 550);
    });

    test('a CR in a name (sent as CR NUL) is refused whole, and replies stay in step', async () => {
      assert.equal(await putFile(server.port, USER, PASSWORD, 'cr', Buffer.from('keep')), undefined);
      ftp.socket.write('DELE cr\r\0name\r\n');
      // Got: 250 (the file "cr" deleted), then 500 for "\0name", every later reply one behind.
      assert.equal((await ftp.read()).code, 553);
      await ftp.expect('NOOP', 200);
      await ftp.expect('SIZE cr', 213);
      await ftp.expect('DELE cr', 250);
    });

    test('a refused RNFR, or any command between, cancels the RNFR before it: RNTO gets 503 and nothing moves', async () => {
      await ftp.expect('MKD rn-kept', 257);
      await ftp.expect('RNFR rn-kept', 350);
      await ftp.expect('RNFR rn-nosuch', 550);
      await ftp.expect('RNTO rn-moved', 503);
      await ftp.expect('RNFR rn-kept', 350);
      await ftp.expect('RNFR /', 550);
      await ftp.expect('RNTO rn-moved', 503);
      await ftp.expect('RNFR rn-kept', 350);
      await ftp.expect('XYZZY', 500);
      await ftp.expect('RNTO rn-moved', 503);
      await ftp.expect('RNFR rn-kept', 350);
      await ftp.expect('RNTO', 501);
      await ftp.expect('RNTO rn-moved', 503);
      await ftp.expect('MLST rn-moved', 550);
      await ftp.expect('RMD rn-kept', 250);
    });

    test('a transfer command without PORT or PASV gets 425', async () => {
      await ftp.expect('RETR x', 425);
      await ftp.expect('STOR x', 425);
      await ftp.expect('LIST', 425);
    });

    test('RETR of a missing file gets 550 and the session goes on', async () => {
      const data = await ftp.passive();
      await ftp.expect('RETR nosuch', 550);
      data.destroy();
      await ftp.expect('NOOP', 200);
    });

    test('PORT and EPRT only to the client itself, above 1023', async () => {
      await ftp.expect('PORT 127,0,0,1,200,10', 200);
      await ftp.expect('PORT 10,0,0,1,200,10', 504);
      await ftp.expect('PORT 127,0,0,1,0,21', 504);
      await ftp.expect('EPRT |1|127.0.0.1|51234|', 200);
      await ftp.expect('EPRT |1|192.0.2.1|51234|', 504);
      await ftp.expect('EPRT |3|127.0.0.1|51234|', 522);
      await ftp.expect('EPSV 3', 522);
      // An IPv6 data connection over an IPv4 control connection: not offered (RFC 2428, vsftpd). Got: 229.
      await ftp.expect('EPSV 2', 522);
      await ftp.expect('EPSV 1', 229);
      // An address of the other family than the one named: malformed (RFC 2428). Got: 200, then 425.
      await ftp.expect('EPRT |1|::ffff:127.0.0.1|51234|', 501);
      await ftp.expect('EPRT |2|127.0.0.1|51234|', 501);
      await ftp.expect('ABOR', 225);
    });

    test('EPRT |2| with the IPv4-mapped form of an IPv4 client\'s address connects to that client', async () => {
      const listener = createServer((socket) => socket.resume());
      listener.listen(0, '127.0.0.1');
      await once(listener, 'listening');
      try {
        const { port } = listener.address() as AddressInfo;
        await ftp.expect(`EPRT |2|::ffff:127.0.0.1|${port}|`, 200);
        // Got: 425, the connect aimed at ::ffff:127.0.0.1 from the IPv4 address 127.0.0.1.
        await ftp.expect('NLST', 150);
        assert.equal((await ftp.read()).code, 226);
      } finally {
        listener.close();
      }
    });

    test('EPSV ALL refuses the other data setup commands', async () => {
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      await other.expect('EPSV ALL', 200);
      await other.expect('PASV', 501);
      await other.expect('PORT 127,0,0,1,200,10', 501);
      await other.expect('EPSV', 229);
      other.close();
    });

    test('PASV gives an address and port that accept a data connection', async () => {
      await ftp.expect('MKD pasv', 257);
      const reply = await ftp.expect('PASV', 227);
      const m = /\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(reply.text);
      assert.ok(m, reply.text);
      assert.equal(m.slice(1, 5).join('.'), '127.0.0.1');
      const data = connect({ host: '127.0.0.1', port: Number(m[5]) * 256 + Number(m[6]) });
      await ftp.expect('LIST pasv', 150);
      assert.equal((await readAll(data)).length, 0);
      assert.equal((await ftp.read()).code, 226);
    });

    test('STAT answers 211 for the session and 213 for a path', async () => {
      const status = await ftp.expect('STAT', 211);
      assert.ok(status.lines.length > 2);
      await ftp.expect('MKD statdir', 257);
      await ftp.expect('MKD statdir/sub', 257);
      const listing = await ftp.expect('STAT statdir', 213);
      assert.match(listing.lines.join('\n'), /^ drwxr-xr-x 1 ftp ftp +0 .* sub$/m);
      await ftp.expect('STAT nosuch', 550);
    });

    test('MLST gives RFC 3659 facts', async () => {
      await ftp.expect('MKD mlst', 257);
      const reply = await ftp.expect('MLST mlst', 250);
      assert.equal(reply.lines.length, 3);
      assert.match(reply.lines[1]!, /^ type=dir;modify=\d{14};perm=flcdmpe;unique=[0-9a-f]+; \/mlst$/);
      await ftp.expect('OPTS MLST type;size;', 200);
      assert.match((await ftp.expect('MLST mlst', 250)).lines[1]!, /^ type=dir; \/mlst$/);
      await ftp.expect('OPTS MLST type;size;modify;perm;unique;', 200);
    });

    test('a 200 KiB command line gets 500 and the server keeps serving', async () => {
      const abuser = await RawFtp.connect(server.port);
      abuser.socket.write(`NOOP ${'A'.repeat(200 * 1024)}\r\n`);
      const reply = await abuser.read();
      assert.ok(reply.code === 500 || reply.code === 0, `got ${reply.code}`);
      if (reply.code === 500) assert.equal((await abuser.send('NOOP')).code, 200);
      abuser.close();
      await ftp.expect('NOOP', 200);
    });

    test('QUIT says 221 and closes', async () => {
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      await other.expect('QUIT', 221);
      assert.equal((await other.read()).code, 0);
    });
  });
}

for (const driver of await drivers()) {
  describe(`homes and passive settings (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver, {
        users: [
          { name: USER, password: { kind: 'plain', value: PASSWORD }, home: '' },
          { name: 'bob', password: { kind: 'plain', value: 'bobpw' }, home: 'homes/bob' },
        ],
        pasvPorts: { min: 40100, max: 40101 },
        pasvAddress: '127.0.0.1',
      });
    });
    after(async () => {
      await server?.close();
    });

    test('a user with a home sees only that home, whatever the path', async () => {
      const admin = await RawFtp.login(server.port, USER, PASSWORD);
      await admin.expect('MKD secret', 257);
      const bob = await RawFtp.login(server.port, 'bob', 'bobpw');
      await bob.expect('MKD mine', 257);
      for (const arg of ['..', '../..', '/..', '../secret', '/homes', '../../secret']) {
        await bob.expect(`CWD ${arg}`, arg.includes('secret') || arg === '/homes' ? 550 : 250);
        assert.equal((await bob.expect('PWD', 257)).text, '"/" is the current directory.', arg);
      }
      await bob.expect('RMD ../../secret', 550);
      await bob.expect('CWD mine', 250);
      // The home was created at login, and bob's "/mine" is "/homes/bob/mine" for a user rooted higher.
      await admin.expect('CWD /homes/bob/mine', 250);
      const data = await bob.passive();
      await bob.expect('NLST /', 150);
      assert.equal((await readAll(data)).toString(), 'mine\r\n');
      assert.equal((await bob.read()).code, 226);
      admin.close();
      bob.close();
    });

    test('PASV uses the configured port range and advertised address', async () => {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      for (let i = 0; i < 4; i++) {
        const reply = await ftp.expect('PASV', 227);
        const m = /\((\d+,\d+,\d+,\d+),(\d+),(\d+)\)/.exec(reply.text)!;
        assert.equal(m[1], '127,0,0,1');
        const port = Number(m[2]) * 256 + Number(m[3]);
        assert.ok(port === 40100 || port === 40101, String(port));
      }
      const epsv = await ftp.expect('EPSV', 229);
      assert.match(epsv.text, /\(\|\|\|4010[01]\|\)/);
      ftp.close();
    });
  });
}
