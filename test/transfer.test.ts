import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { Client } from 'basic-ftp';
import { basicFtp, RawFtp, readAll, retrieve, store } from './helpers/ftp.js';
import { drivers, noDanglingUploads, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';

/** Collects a download into memory. */
function sink(): { stream: Writable; data: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  });
  return { stream, data: () => Buffer.concat(chunks) };
}

async function download(client: Client, path: string, startAt = 0): Promise<Buffer> {
  const out = sink();
  await client.downloadTo(out.stream, path, startAt);
  return out.data();
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

for (const driver of await drivers()) {
  describe(`transfers (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver);
    });
    after(async () => {
      await server?.close();
    });

    for (const mode of ['passive', 'active'] as const) {
      describe(`basic-ftp, ${mode} mode`, () => {
        let client: Client;
        const root = `/${mode}`;
        before(async () => {
          client = await basicFtp(server.port, USER, PASSWORD, mode);
          await client.send(`MKD ${root}`);
        });
        after(() => client?.close());

        test('upload, list, download and delete a file with UTF-8 and spaces in its name', async () => {
          const dir = `${root}/dossier été`;
          const name = 'naïve file ✓ (1).txt';
          const body = Buffer.from('hello, wörld\n');
          assert.equal((await client.send(`MKD ${dir}`)).code, 257);
          assert.equal((await client.cd(dir)).code, 250);
          assert.equal((await client.uploadFrom(Readable.from([body]), name)).code, 226);
          const entries = await client.list();
          const entry = entries.find((e) => e.name === name);
          assert.ok(entry, `listed: ${entries.map((e) => e.name).join(', ')}`);
          assert.equal(entry.size, body.length);
          assert.ok(entry.isFile);
          assert.deepEqual(await download(client, name), body);
          assert.equal(await client.size(name), body.length);
          const modified = await client.lastMod(name);
          assert.ok(Math.abs(modified.getTime() - Date.now()) < 120_000, `MDTM ${modified.toISOString()}`);
          assert.equal((await client.remove(name)).code, 250);
          assert.deepEqual(await client.list(), []);
          await client.cd('/');
        });

        test('LIST in ls -l format, NLST names only', async () => {
          const dir = `${root}/formats`;
          await client.send(`MKD ${dir}`);
          await client.send(`MKD ${dir}/sub`);
          await client.uploadFrom(Readable.from([Buffer.from('12345')]), `${dir}/five bytes.bin`);
          // basic-ftp prefers MLSD; make it parse LIST too.
          const viaList = await client.list(`${dir}`);
          assert.deepEqual(viaList.map((e) => [e.name, e.isDirectory, e.size]).sort(), [['five bytes.bin', false, 5], ['sub', true, 0]]);
          const raw = await RawFtp.login(server.port, USER, PASSWORD);
          for (const [verb, pattern] of [
            ['LIST', /^-rw-r--r-- 1 ftp ftp +5 [A-Z][a-z]{2} [ \d]\d \d\d:\d\d five bytes\.bin\r\n/m],
            ['LIST -la', /^drwxr-xr-x 1 ftp ftp +0 [A-Z][a-z]{2} [ \d]\d ( \d{4}|\d\d:\d\d) sub\r\n/m],
            ['NLST', /^five bytes\.bin\r\nsub\r\n$|^sub\r\nfive bytes\.bin\r\n$/],
            ['MLSD', /^type=file;size=5;modify=\d{14};perm=adfrw;unique=[0-9a-f]+; five bytes\.bin\r\n/m],
          ] as const) {
            const data = await raw.passive();
            await raw.expect(`${verb} ${dir}`, 150);
            assert.match((await readAll(data)).toString(), pattern, verb);
            assert.equal((await raw.read()).code, 226);
          }
          const data = await raw.passive();
          await raw.expect(`LIST ${dir}/five bytes.bin`, 150);
          assert.match((await readAll(data)).toString(), /five bytes\.bin\r\n$/);
          assert.equal((await raw.read()).code, 226);
          const missing = await raw.passive();
          await raw.expect(`MLSD ${dir}/nosuch`, 550);
          missing.destroy();
          raw.close();
        });

        test('REST then RETR resumes a download', async () => {
          const body = randomBytes(100_000);
          await client.uploadFrom(Readable.from([body]), `${root}/resume.bin`);
          assert.deepEqual(await download(client, `${root}/resume.bin`, 40_000), body.subarray(40_000));
          assert.deepEqual(await download(client, `${root}/resume.bin`, 100_000), Buffer.alloc(0));
        });

        test('APPE appends; REST then STOR overwrites from an offset', async () => {
          await client.uploadFrom(Readable.from([Buffer.from('first,')]), `${root}/append.txt`);
          assert.equal((await client.appendFrom(Readable.from([Buffer.from('second')]), `${root}/append.txt`)).code, 226);
          assert.equal((await download(client, `${root}/append.txt`)).toString(), 'first,second');
          assert.equal((await client.appendFrom(Readable.from([Buffer.from('new')]), `${root}/appended-new.txt`)).code, 226);
          assert.equal((await download(client, `${root}/appended-new.txt`)).toString(), 'new');
        });

        test('rename a file, and a directory with nested files', async () => {
          const dir = `${root}/tree`;
          await client.send(`MKD ${dir}`);
          await client.send(`MKD ${dir}/a`);
          await client.send(`MKD ${dir}/a/b`);
          await client.uploadFrom(Readable.from([Buffer.from('one')]), `${dir}/a/one.txt`);
          await client.uploadFrom(Readable.from([Buffer.from('two')]), `${dir}/a/b/two.txt`);
          assert.equal((await client.rename(`${dir}/a/one.txt`, `${dir}/a/uno.txt`)).code, 250);
          assert.equal((await client.rename(`${dir}/a`, `${dir}/moved a`)).code, 250);
          assert.equal((await download(client, `${dir}/moved a/uno.txt`)).toString(), 'one');
          assert.equal((await download(client, `${dir}/moved a/b/two.txt`)).toString(), 'two');
          await assert.rejects(client.cd(`${dir}/a`), /550/);
          assert.deepEqual((await client.list(dir)).map((e) => e.name), ['moved a']);
        });

        test('RMD of a non-empty directory gets 550; of an empty one 250', async () => {
          const dir = `${root}/full`;
          await client.send(`MKD ${dir}`);
          await client.uploadFrom(Readable.from([Buffer.from('x')]), `${dir}/x`);
          await assert.rejects(client.send(`RMD ${dir}`), /550/);
          await client.remove(`${dir}/x`);
          assert.equal((await client.send(`RMD ${dir}`)).code, 250);
        });
      });
    }

    test('a 50 MiB round trip keeps every byte', async () => {
      const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
      const body = randomBytes(50 * 1024 * 1024);
      assert.equal((await client.uploadFrom(Readable.from([body]), 'big.bin')).code, 226);
      assert.equal(await client.size('big.bin'), body.length);
      assert.equal(sha256(await download(client, 'big.bin')), sha256(body));
      await client.remove('big.bin');
      client.close();
    });

    test('TYPE A turns CRLF into LF on STOR and back on RETR', async () => {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('TYPE A', 200);
      let data = await raw.passive();
      await raw.expect('STOR ascii.txt', 150);
      data.end('line one\r\nline two\r\nbare\rcr\r\n');
      assert.equal((await raw.read()).code, 226);
      await raw.expect('TYPE I', 200);
      assert.equal((await raw.expect('SIZE ascii.txt', 213)).text, String('line one\nline two\nbare\rcr\n'.length));
      data = await raw.passive();
      await raw.expect('RETR ascii.txt', 150);
      assert.equal((await readAll(data)).toString(), 'line one\nline two\nbare\rcr\n');
      assert.equal((await raw.read()).code, 226);
      await raw.expect('TYPE A', 200);
      data = await raw.passive();
      await raw.expect('RETR ascii.txt', 150);
      assert.equal((await readAll(data)).toString(), 'line one\r\nline two\r\nbare\rcr\r\n');
      assert.equal((await raw.read()).code, 226);
      raw.close();
    });

    test('REST beyond the end of a file gets 554, before any 150', async () => {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      let data = await raw.passive();
      await raw.expect('STOR short.txt', 150);
      data.end('12345');
      assert.equal((await raw.read()).code, 226);
      data = await raw.passive();
      await raw.expect('REST 6', 350);
      await raw.expect('RETR short.txt', 554);
      data.destroy();
      data = await raw.passive();
      await raw.expect('REST 9', 350);
      await raw.expect('STOR short.txt', 554);
      data.destroy();
      data = await raw.passive();
      await raw.expect('REST 3', 350);
      await raw.expect('STOR short.txt', 150);
      data.end('XY');
      assert.equal((await raw.read()).code, 226);
      data = await raw.passive();
      await raw.expect('RETR short.txt', 150);
      assert.equal((await readAll(data)).toString(), '123XY');
      assert.equal((await raw.read()).code, 226);
      raw.close();
    });

    for (const base of [undefined, Buffer.alloc(0), Buffer.from('line0\n'), Buffer.alloc(6 * 1024 * 1024, 'b')]) {
      const what = base ? `a file of ${base.length} bytes` : 'a file not there yet';
      test(`two APPEs to ${what} at once: the one that finishes second gets 451 instead of overwriting the first`, async () => {
        const name = `appended-${base?.length ?? 'new'}.txt`;
        const first = await RawFtp.login(server.port, USER, PASSWORD);
        let data: Socket;
        if (base) {
          data = await first.passive();
          await first.expect(`STOR ${name}`, 150);
          data.end(base);
          assert.equal((await first.read()).code, 226);
        }
        // Both start from the same file (on S3, 6 MiB of it is kept by server-side copy); the second finishes first.
        const slow = await first.passive();
        await first.expect(`APPE ${name}`, 150);
        slow.write('from-A\n');
        const other = await RawFtp.login(server.port, USER, PASSWORD);
        data = await other.passive();
        await other.expect(`APPE ${name}`, 150);
        data.end('from-B\n');
        assert.equal((await other.read()).code, 226);
        slow.end();
        // Got: 226 here too, and the file was the base + from-A: B's append was lost.
        assert.equal((await first.read()).code, 451);
        data = await other.passive();
        await other.expect(`RETR ${name}`, 150);
        assert.ok((await readAll(data)).equals(Buffer.concat([base ?? Buffer.alloc(0), Buffer.from('from-B\n')])));
        assert.equal((await other.read()).code, 226);
        first.close();
        other.close();
        await noDanglingUploads(driver, server);
      });
    }

    test('twelve APPEs to one file finishing at once, five times: every append acknowledged with 226 is in the file', async () => {
      const name = 'appended-by-many.txt';
      const sessions = await Promise.all(Array.from({ length: 12 }, () => RawFtp.login(server.port, USER, PASSWORD)));
      for (let round = 0; round < 5; round++) {
        let data = await sessions[0]!.passive();
        await sessions[0]!.expect(`STOR ${name}`, 150);
        data.end('BASE\n');
        assert.equal((await sessions[0]!.read()).code, 226);
        const sockets: Socket[] = [];
        for (const ftp of sessions) {
          sockets.push(await ftp.passive());
          await ftp.expect(`APPE ${name}`, 150);
        }
        sockets.forEach((socket, i) => socket.end(String.fromCharCode(65 + i).repeat(1000)));
        const codes = await Promise.all(sessions.map(async (ftp) => (await ftp.read(10_000)).code));
        data = await sessions[0]!.passive();
        await sessions[0]!.expect(`RETR ${name}`, 150);
        const content = (await readAll(data)).toString();
        assert.equal((await sessions[0]!.read()).code, 226);
        const acknowledged = codes.flatMap((code, i) => (code === 226 ? [String.fromCharCode(65 + i)] : []));
        // Got, on the local driver: several 226s and one block in the file (6 rounds of 10 with 12 clients).
        assert.equal(content.length, 5 + 1000 * acknowledged.length, `round ${round}: 226 for ${acknowledged.join('')}, ${content.length} bytes`);
        for (const letter of acknowledged) assert.ok(content.includes(letter.repeat(1000)), `round ${round}: ${letter}'s append is lost`);
        assert.ok(codes.every((code) => code === 226 || code === 451), codes.join(' '));
      }
      for (const ftp of sessions) ftp.close();
      await noDanglingUploads(driver, server);
    });

    test('an APPE or REST+STOR finishing while another session deletes or renames its file away never brings the old bytes back', async () => {
      const writer = await RawFtp.login(server.port, USER, PASSWORD);
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      const checker = await RawFtp.login(server.port, USER, PASSWORD);
      const wrong: string[] = [];
      for (const [verb, away] of [['APPE', 'DELE'], ['REST', 'DELE'], ['APPE', 'RNTO']] as const) {
        for (let round = 0; round < 40; round++) {
          assert.equal(await store(checker, 'kept.txt', 'OLD-CONTENT\n'), 226);
          const data = await writer.passive();
          if (verb === 'REST') await writer.expect('REST 4', 350);
          await writer.expect(`${verb === 'APPE' ? 'APPE' : 'STOR'} kept.txt`, 150);
          data.end('NEW\n');
          // The other session acts while the upload is being published (the commit rule's settle is 10 ms).
          await new Promise((r) => setTimeout(r, round / 2));
          const moved =
            away === 'DELE'
              ? (await other.send('DELE kept.txt')).code
              : (await other.expect('RNFR kept.txt', 350)) && (await other.send('RNTO moved.txt')).code;
          const written = (await writer.read()).code;
          const after = await retrieve(checker, 'kept.txt');
          // Either order explains a 2xx for both only with the old bytes gone from the name: the move came first
          // (the upload then fails) or the upload did (the move then took its result along).
          if (moved === 250 && written === 226 && after.code === 226 && after.body!.toString().startsWith('OLD')) {
            wrong.push(`${verb} + ${away}, round ${round}: ${JSON.stringify(after.body!.toString())}`);
          }
          for (const name of ['kept.txt', 'moved.txt']) await checker.send(`DELE ${name}`);
        }
      }
      // Got, on the local driver: a DELE or RNTO answered 250, and the file was back with the old bytes and the new ones.
      assert.deepEqual(wrong, []);
      for (const ftp of [writer, other, checker]) ftp.close();
      await noDanglingUploads(driver, server);
    });

    test('a directory with an upload running into it is not removed (550, as on a disk) nor renamed (450): the upload lands where it was sent', async () => {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      await raw.expect('MKD moving', 257);
      const data = await raw.passive();
      await raw.expect('STOR moving/f.txt', 150);
      data.write('first half, ');
      // Got: 250, and the upload then failed (local driver) or brought the directory back (S3).
      await other.expect('RMD moving', 550);
      await other.expect('RNFR moving', 350);
      // Got: 250; then RMD of the new name answered 250, and the upload failed after its 150 (local driver).
      await other.expect('RNTO moved', 450);
      data.end('second half');
      assert.equal((await raw.read()).code, 226);
      assert.equal((await retrieve(other, 'moving/f.txt')).body?.toString(), 'first half, second half');
      await other.expect('RNFR moving', 350);
      await other.expect('RNTO moved', 250);
      assert.equal((await retrieve(other, 'moved/f.txt')).body?.toString(), 'first half, second half');
      await other.expect('DELE moved/f.txt', 250);
      await other.expect('RMD moved', 250);
      raw.close();
      other.close();
    });

    /**
     * Each round, `step(round)` sets up and names a command another session sends; an upload into `dir`
     * leaves a few loop turns after it (more each round), so that it reaches the storage at every moment
     * of the command's work. Returns what `check` found wrong, per round.
     */
    async function racingUploads(
      step: (other: RawFtp, round: number) => Promise<{ command: string; dir: string }>,
      check: (stor: number, done: number, reply: number) => boolean,
      cleanUp: (other: RawFtp, done: number, reply: number) => Promise<void>,
    ): Promise<string[]> {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const other = await RawFtp.login(server.port, USER, PASSWORD);
      const wrong: string[] = [];
      for (let round = 0; round < 60; round++) {
        const { command, dir } = await step(other, round);
        const data = await raw.passive();
        const sent = other.send(command);
        for (let turn = 0; turn < round % 12; turn++) await new Promise((r) => setImmediate(r));
        const [stor, reply] = await Promise.all([raw.send(`STOR ${dir}/f.txt`), sent]);
        let done = stor.code;
        if (stor.code === 150) {
          data.end('landed');
          done = (await raw.read()).code;
        } else data.destroy();
        if (!check(stor.code, done, reply.code)) wrong.push(`round ${round}: STOR ${stor.code} then ${done}, ${command.split(' ')[0]} ${reply.code}`);
        await cleanUp(other, done, reply.code);
      }
      raw.close();
      other.close();
      return wrong;
    }

    test('a directory rename racing the start of an upload into the directory: never a 250 for the rename and a failure after the 150', async () => {
      const wrong = await racingUploads(
        async (other, round) => {
          await other.expect(`MKD from${round}`, 257);
          await other.expect(`RNFR from${round}`, 350);
          return { command: `RNTO to${round}`, dir: `from${round}` };
        },
        // Got, on the local driver: RNTO 250, then the STOR's 150 and 550 (its directory had moved); on S3, the
        // upload landed under the old name after the rename's 250.
        (stor, done, rnto) => (stor === 150 ? done === 226 && rnto === 450 : [250, 450].includes(rnto)),
        async () => undefined,
      );
      assert.deepEqual(wrong, []);
    });

    test('an RMD racing the start of an upload into its directory: an upload that got its 150 lands, and the RMD then answers 550', async () => {
      const wrong = await racingUploads(
        async (other) => {
          await other.expect('MKD racing', 257);
          return { command: 'RMD racing', dir: 'racing' };
        },
        // Got, on the local driver: 150, then 451 (the directory removed under the upload) beside the RMD's 250.
        // A STOR refused (550: no such directory) may still have made the RMD keep the directory (550) for it,
        // if it came while the directory was being removed: neither then claims a change it did not make.
        (stor, done, rmd) => (stor === 150 ? done === 226 && rmd === 550 : [250, 550].includes(rmd)),
        async (other, done, rmd) => {
          if (done === 226) await other.expect('DELE racing/f.txt', 250);
          if (rmd !== 250) await other.expect('RMD racing', 250);
        },
      );
      assert.deepEqual(wrong, []);
    });

    test('STAT during a transfer reports progress; ABOR stops it with 426 then 226', async () => {
      const raw = await RawFtp.login(server.port, USER, PASSWORD);
      const original = Buffer.from('the previous content');
      let data = await raw.passive();
      await raw.expect('STOR aborted.bin', 150);
      data.end(original);
      assert.equal((await raw.read()).code, 226);
      data = await raw.passive();
      await raw.expect('STOR aborted.bin', 150);
      data.write(randomBytes(1024 * 1024));
      await new Promise((r) => setTimeout(r, 300));
      const status = await raw.send('STAT');
      assert.equal(status.code, 213);
      assert.match(status.text, /upload of \/aborted\.bin: \d+ bytes transferred/);
      raw.socket.write('ABOR\r\n');
      assert.equal((await raw.read()).code, 426);
      assert.equal((await raw.read()).code, 226);
      data.destroy();
      data = await raw.passive();
      await raw.expect('RETR aborted.bin', 150);
      assert.deepEqual(await readAll(data), original);
      assert.equal((await raw.read()).code, 226);
      assert.deepEqual(await driver.danglingUploads(server.storageConfig), []);
      raw.close();
    });
  });
}
