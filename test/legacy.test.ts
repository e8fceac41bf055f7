import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawFtp, readAll } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type Driver, type TestServer } from './helpers/server.js';
import { StorageError } from '../src/storage/types.js';

/** Issue 14 items 4 and 5: what legacy clients and tools send, on both drivers. */

async function put(ftp: RawFtp, name: string, body: string | Buffer): Promise<void> {
  const data = await ftp.passive();
  await ftp.expect(`STOR ${name}`, 150);
  data.end(body);
  assert.equal((await ftp.read()).code, 226, `STOR ${name}`);
}

/** A listing command's data, or its refusal code when there is no 150. */
async function listing(ftp: RawFtp, line: string): Promise<{ code: number; lines: string[] }> {
  const data = await ftp.passive();
  const reply = await ftp.send(line);
  if (reply.code !== 150) {
    data.destroy();
    return { code: reply.code, lines: [] };
  }
  const text = (await readAll(data)).toString('utf8');
  const end = await ftp.read();
  return { code: end.code, lines: text.split('\r\n').filter((l) => l !== '') };
}

for (const driver of await drivers()) {
  describe(`legacy clients: MDTM set and MFMT (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let ftp: RawFtp;
    before(async () => {
      server = await startTestServer(driver);
      ftp = await RawFtp.login(server.port, USER, PASSWORD);
      await put(ftp, 'dated.txt', 'x');
    });
    after(async () => {
      ftp?.close();
      await server?.close();
    });

    test('FEAT offers MFMT and HELP lists it only where the storage can set times', async () => {
      const features = (await ftp.expect('FEAT', 211)).lines.map((l) => l.trim());
      const help = (await ftp.expect('HELP', 214)).lines.join(' ');
      assert.equal(features.includes('MFMT'), driver.name === 'local');
      assert.equal(/\bMFMT\b/.test(help), driver.name === 'local');
    });

    if (driver.name === 'local') {
      test('MDTM <time> <path> and MFMT set the time (local: utimes); MDTM and MLSD then show it', async () => {
        assert.equal((await ftp.expect('MDTM 20200102030405 dated.txt', 213)).text, 'File modification time set.');
        assert.equal((await ftp.expect('MDTM dated.txt', 213)).text, '20200102030405');
        assert.equal((await ftp.expect('MFMT 20110203040506 dated.txt', 213)).text, 'Modify=20110203040506; /dated.txt');
        assert.equal((await ftp.expect('MDTM dated.txt', 213)).text, '20110203040506');
        const mlsd = await listing(ftp, 'MLSD');
        assert.ok(mlsd.lines.some((l) => l.includes('modify=20110203040506;') && l.endsWith(' dated.txt')), mlsd.lines.join('\n'));
        // Fractions (rclone sends milliseconds) are accepted.
        await ftp.expect('MDTM 20210101000000.123 dated.txt', 213);
        assert.equal((await ftp.expect('MDTM dated.txt', 213)).text, '20210101000000');
      });

      test('setting a time: 550 for a missing file, 501 for a bad time in MFMT', async () => {
        await ftp.expect('MDTM 20200102030405 missing.txt', 550);
        await ftp.expect('MFMT 20200102030405 missing.txt', 550);
        await ftp.expect('MFMT 20201340000000 dated.txt', 501);
        await ftp.expect('MFMT dated.txt', 501);
      });
    } else {
      test('S3: MDTM <time> <path> is refused with its reason (550), MFMT is not implemented (502)', async () => {
        const reply = await ftp.expect('MDTM 20200102030405 dated.txt', 550);
        assert.match(reply.text, /Setting the modification time is not supported on S3 storage/);
        await ftp.expect('MFMT 20200102030405 dated.txt', 502);
        // The read form still works, and was not taken as a path.
        assert.match((await ftp.expect('MDTM dated.txt', 213)).text, /^\d{14}$/);
      });
    }

    test('an invalid time-val is read as a path, as before (550 for a missing file)', async () => {
      await ftp.expect('MDTM 20201340000000 dated.txt', 550);
    });
  });
}

for (const driver of await drivers()) {
  if (driver.name !== 's3') continue;
  describe('legacy clients: S3 refusing the server\'s credentials is 451 and an error log (s3)', { skip: driver.skip }, () => {
    const withCredentials = (accessKeyId: string | undefined, secretAccessKey: string): Driver => ({
      ...driver,
      storageConfig() {
        const config = driver.storageConfig();
        if (config.kind !== 's3') throw new Error('s3 config expected');
        return { ...config, credentials: { accessKeyId: accessKeyId ?? config.credentials!.accessKeyId, secretAccessKey } };
      },
    });

    for (const [label, accessKeyId, s3Code] of [
      ['a wrong secret', undefined, 'SignatureDoesNotMatch'],
      ['an unknown access key', 'NOSUCHKEYID', 'InvalidAccessKeyId'],
    ] as const) {
      test(`${label}: every command answers 451, never 550, and the log says ${s3Code} at error level`, async () => {
        const logLines: string[] = [];
        const server = await startTestServer(withCredentials(accessKeyId, 'definitely-not-the-secret'), {}, { logLines });
        const ftp = await RawFtp.login(server.port, USER, PASSWORD);
        try {
          for (const line of ['CWD sub', 'MKD sub', 'DELE x.txt', 'SIZE x.txt', 'MDTM x.txt', 'RNFR x.txt', 'RMD sub', 'MLST x.txt', 'MLST /']) {
            const reply = await ftp.send(line);
            if (line === 'MLST /') continue; // the root needs no request
            assert.equal(reply.code, 451, `${line}: ${reply.lines.join(' | ')}`);
            assert.match(reply.text, /credentials/);
          }
          assert.equal((await listing(ftp, 'LIST')).code, 451, 'LIST');
          assert.equal((await listing(ftp, 'NLST')).code, 451, 'NLST');
          const data = await ftp.passive();
          assert.equal((await ftp.send('RETR x.txt')).code, 451, 'RETR');
          data.destroy();
          const errors = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 's3-refused-credentials');
          assert.ok(errors.length > 0, 'an s3-refused-credentials line');
          for (const e of errors) {
            assert.equal(e.level, 50, 'error level');
            assert.equal(e.s3Code, s3Code);
          }
          await assert.rejects(server.storage.ping(), (err: unknown) => err instanceof StorageError && err.code === 'BackendRefused');
        } finally {
          ftp.close();
          await server.close();
        }
      });
    }

    test('a key S3 refuses for this user (AccessDenied) stays 550: only the server\'s credentials are 451', async () => {
      // Nothing in MinIO's root account is refused per key; what is checked is the mapping itself.
      const { replyForError } = await import('../src/commands/errors.js');
      assert.equal(replyForError(new StorageError('Denied', 'x')).code, 550);
      assert.equal(replyForError(new StorageError('BackendRefused', 'x')).code, 451);
    });
  });
}
