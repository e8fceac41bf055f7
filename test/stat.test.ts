import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawFtp } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';

for (const driver of await drivers()) {
  describe(`STAT (${driver.name})`, { skip: driver.skip }, () => {
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
  });
}
