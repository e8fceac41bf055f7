import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { basicFtp, RawFtp } from './helpers/ftp.js';
import { drivers, PASSWORD, startTestServer, USER } from './helpers/server.js';

const [local] = await drivers();

test('one JSON line per session, command and transfer, and never a password', async () => {
  const lines: string[] = [];
  const server = await startTestServer(local!, {}, { logLines: lines });
  try {
    const client = await basicFtp(server.port, USER, PASSWORD, 'passive');
    await client.uploadFrom(Readable.from([Buffer.from('12345')]), 'logged.txt');
    client.close();
    const bad = await RawFtp.connect(server.port);
    await bad.expect('USER mallory', 331);
    await bad.expect('PASS hunter2-secret', 530);
    // Mistyped and oddly spaced PASS lines are logged without their argument too.
    await bad.expect('USER mallory', 331);
    await bad.expect(' PASS leading-space-secret', 500);
    await bad.expect('PASS\ttab-secret', 500);
    await bad.expect('PASSWORD typo-secret', 500);
    // PASS must follow USER at once (anything between cancels the login).
    await bad.expect('USER mallory', 331);
    await bad.expect('pass lower-case-secret', 530);
    // A password typed on a line of its own, or glued to PASS, is an unknown verb: not logged either.
    await bad.expect('USER mallory', 331);
    await bad.expect('Alone2Secret', 500);
    await bad.expect('PASS:glued-secret', 500);
    await bad.expect('PASS\u200bzwsp-secret', 500);
    // ACCT's argument is an account password (RFC 959 §4.1.1). Got: logged as it came.
    await bad.expect('ACCT acct-secret', 530);
    bad.close();
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    await server.close();
  }
  const text = lines.join('');
  for (const secret of [PASSWORD, 'hunter2-secret', 'leading-space-secret', 'tab-secret', 'typo-secret', 'lower-case-secret', 'Alone2Secret', 'glued-secret', 'zwsp-secret', 'alone2sec', 'acct-secret']) {
    assert.ok(!text.toLowerCase().includes(secret.toLowerCase()), `${secret} reached the log`);
  }
  const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(events.some((e) => e.event === 'session-start' && e.client === '127.0.0.1'));
  assert.ok(events.some((e) => e.event === 'session-end'));
  assert.ok(events.some((e) => e.event === 'command' && e.verb === 'PASS' && e.code === 230 && e.arg === '[redacted]'));
  assert.ok(events.some((e) => e.event === 'login-failed' && e.user === 'mallory'));
  assert.ok(events.some((e) => e.event === 'command' && e.verb === '(unknown)' && e.code === 500 && !('arg' in e)));
  const transfer = events.find((e) => e.event === 'transfer');
  assert.ok(transfer, 'no transfer line');
  assert.equal(transfer.user, USER);
  assert.equal(transfer.client, '127.0.0.1');
  assert.equal(transfer.direction, 'upload');
  assert.equal(transfer.path, '/logged.txt');
  assert.equal(transfer.bytes, 5);
  assert.equal(transfer.result, 'ok');
  assert.equal(typeof transfer.ms, 'number');
});
