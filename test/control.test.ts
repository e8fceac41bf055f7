import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReply, quotePath, Reply } from '../src/replies.js';
import { decodeArgument } from '../src/encoding.js';
import { LineReader, parseCommand } from '../src/session/lines.js';

test('replies are single or multi-line per RFC 959, and never carry a raw CR or LF', () => {
  assert.equal(formatReply(Reply.CommandOkay, 'ok'), '200 ok\r\n');
  assert.equal(formatReply(Reply.SystemStatus, ['a', '211 b', 'end']), '211-a\r\n 211 b\r\n211 end\r\n');
  assert.equal(formatReply(Reply.PathCreated, `${quotePath('/evil\r\n230 ok')} created.`), '257 "/evil  230 ok" created.\r\n');
  assert.equal(quotePath('/say "hi"'), '"/say ""hi"""');
});

test('LineReader splits on CRLF, CR or LF, and strips Telnet IAC sequences', () => {
  const reader = new LineReader(64);
  const lines = (chunk: Buffer) => {
    reader.feed(chunk);
    const out: string[] = [];
    for (let e = reader.next(); e; e = reader.next()) out.push('line' in e ? e.line : 'tooLong' in e ? '<too long>' : '<telnet inside>');
    assert.equal(reader.buffered, 0);
    return out;
  };
  assert.deepEqual(lines(Buffer.from('USER a\r\nPASS b\nNOOP\rNO')), ['USER a', 'PASS b', 'NOOP']);
  assert.deepEqual(lines(Buffer.from('OP\r\n')), ['NOOP']);
  // IAC IP IAC DM ABOR, as clients send it with urgent data; IAC WILL x is negotiation.
  assert.deepEqual(lines(Buffer.from([0xff, 0xf4, 0xff, 0xf2, ...Buffer.from('ABOR\r\n'), 0xff, 0xfb, 0x01, ...Buffer.from('NOOP\r\n')])), ['ABOR', 'NOOP']);
  assert.deepEqual(lines(Buffer.from(`${'x'.repeat(100)}\r\nNOOP\r\n`)), ['<too long>', 'NOOP']);
  assert.deepEqual(lines(Buffer.from('CWD dossier été\r\n')), ['CWD dossier été']);
  // RFC 3659 §2.2: CR NUL is a CR inside a pathname. Got: 'DELE cr' ran, then '\0name' as a command.
  assert.deepEqual(lines(Buffer.from('DELE cr\r\0name\r\nNOOP\r\n')), ['DELE cr\rname', 'NOOP']);
  // IAC before a byte that is no Telnet command is a 0xFF of the name (as ProFTPD reads it), not
  // a sequence to drop: got 'MKD Hales' for a latin-1 "Haÿ-les". IAC IAC is one 0xFF.
  for (const bytes of [[0xff, 0x2d], [0xff, 0xff, 0x2d]]) {
    const [line] = lines(Buffer.from([...Buffer.from('MKD Ha'), ...bytes, ...Buffer.from('les\r\n')]));
    assert.equal(decodeArgument(line!, 'latin1'), 'MKD Haÿ-les', JSON.stringify(bytes));
  }
  // A Telnet command inside a line (IAC then 0xF0-0xFE, a Latin-1 "ÿö" or "ÿü" sent undoubled):
  // the line is refused whole. Got: 'DELE ab' for "DELE aÿöb", another file.
  assert.deepEqual(lines(Buffer.from([...Buffer.from('DELE a'), 0xff, 0xf6, ...Buffer.from('b\r\nNOOP\r\n')])), ['<telnet inside>', 'NOOP']);
  assert.deepEqual(lines(Buffer.from([...Buffer.from('MKD a'), 0xff, 0xfc, 0x78, ...Buffer.from('b\r\n')])), ['<telnet inside>']);
});

test('LineReader hands out one line at a time and discard() drops what follows', () => {
  const reader = new LineReader(64);
  reader.feed(Buffer.from('AUTH TLS\r\nUSER alice\r\nPASS pw\r\n'));
  assert.deepEqual(reader.next(), { line: 'AUTH TLS' });
  assert.equal(reader.buffered, '\nUSER alice\r\nPASS pw\r\n'.length);
  reader.discard();
  assert.equal(reader.buffered, 0);
  assert.equal(reader.next(), undefined);
  reader.feed(Buffer.from('NOOP\r\n'));
  assert.deepEqual(reader.next(), { line: 'NOOP' });
});

test('parseCommand upper-cases the verb and keeps the argument as sent', () => {
  assert.deepEqual(parseCommand('stor  two  spaces '), { verb: 'STOR', arg: ' two  spaces ' });
  assert.deepEqual(parseCommand('noop'), { verb: 'NOOP', arg: '' });
});
