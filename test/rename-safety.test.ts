import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { isDirectoryRenameAllowed, parsePermissions } from '../src/auth/permissions.js';
import type { User } from '../src/auth/users.js';
import { RawFtp, readAll } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER, type TestServer } from './helpers/server.js';

/** Issue 12.4: a directory rename must not carry files out from under (or into) a stricter rule. */
const RULES = { '/': 'full', '/reports/final': 'read-only', '/archive/final': 'read-only' };

describe('isDirectoryRenameAllowed', () => {
  const rules = parsePermissions(RULES);

  test('refuses moving a tree with a stricter rule below it, either way', () => {
    assert.equal(isDirectoryRenameAllowed(rules, '/reports', '/r2'), false);
    assert.equal(isDirectoryRenameAllowed(rules, '/r2', '/reports'), false);
    assert.equal(isDirectoryRenameAllowed(rules, '/', '/x'), false);
    assert.equal(isDirectoryRenameAllowed(rules, '/a', '/reports'), false);
  });

  test('allows trees with no rule below them, and moves within one rule', () => {
    assert.equal(isDirectoryRenameAllowed(rules, '/a', '/b'), true);
    assert.equal(isDirectoryRenameAllowed(rules, '/reports/draft', '/reports/old'), true);
    assert.equal(isDirectoryRenameAllowed(rules, '/reports/final/x', '/reports/final/y'), true);
    assert.equal(isDirectoryRenameAllowed(parsePermissions('full'), '/a', '/b'), true);
  });

  test('allows a rule below that is at least as open on both sides', () => {
    const open = parsePermissions({ '/': ['list', 'read', 'rename', 'mkdir'], '/a/inbox': 'full', '/b/inbox': 'full' });
    assert.equal(isDirectoryRenameAllowed(open, '/a', '/b'), true);
    // Moved to where nothing opens it up: the inbox loses rights, it gains none.
    assert.equal(isDirectoryRenameAllowed(open, '/a', '/c'), true);
    // Moved to where a rule grants more than it had: refused.
    assert.equal(isDirectoryRenameAllowed(open, '/c', '/a'), false);
  });
});

const bob = (): User => ({ name: 'bob', password: { kind: 'plain', value: 'bobpw' }, home: '', permissions: parsePermissions(RULES) });

for (const driver of await drivers()) {
  describe(`directory renames keep stricter rules (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(driver, {
        users: [{ name: USER, password: { kind: 'plain', value: PASSWORD }, home: '' }, bob()],
      });
      await server.storage.mkdirAll('reports/final');
      await server.storage.write('reports/final/q1.txt', Readable.from([Buffer.from('signed off')]));
      await server.storage.mkdirAll('r3/final');
      await server.storage.mkdirAll('free/sub');
      await server.storage.mkdirAll('mine/final');
    });
    after(async () => {
      await server?.close();
    });

    test('RNFR /reports, RNTO /r2 is refused and the read-only file stays read-only', async () => {
      const ftp = await RawFtp.login(server.port, 'bob', 'bobpw');
      try {
        await ftp.expect('RNFR /reports', 350);
        await ftp.expect('RNTO /r2', 550);
        await ftp.expect('RNFR /reports/final', 550);
        // Into a protected place: bob's own tree renamed to where its files would be read-only.
        await ftp.expect('RNFR /r3', 350);
        await ftp.expect('RNTO /archive', 550);
        const data = await ftp.passive();
        await ftp.expect('RETR /reports/final/q1.txt', 150);
        assert.equal((await readAll(data)).toString(), 'signed off');
        assert.equal((await ftp.read()).code, 226);
        // Renames that touch no stricter rule still work.
        await ftp.expect('RNFR /free', 350);
        await ftp.expect('RNTO /free2', 250);
      } finally {
        ftp.close();
      }
      assert.equal((await server.storage.stat('reports/final/q1.txt')).size, 'signed off'.length);
      assert.equal((await server.storage.stat('free2/sub')).isDirectory, true);
      assert.equal((await server.storage.stat('r3/final')).isDirectory, true);
      await assert.rejects(server.storage.stat('archive'));
      await assert.rejects(server.storage.stat('r2'));
    });

    test('a user without nested rules renames directories as before', async () => {
      const ftp = await RawFtp.login(server.port, USER, PASSWORD);
      try {
        await ftp.expect('RNFR /mine', 350);
        await ftp.expect('RNTO /archive', 250);
      } finally {
        ftp.close();
      }
    });
  });
}
