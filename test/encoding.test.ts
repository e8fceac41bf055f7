import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeArgument, decodeLine, encodeLegacy, hasInvalidBytes, LEGACY_ENCODINGS } from '../src/encoding.js';
import { resolveFtpPath } from '../src/paths.js';
import { LineReader } from '../src/session/lines.js';
import { StorageError } from '../src/storage/types.js';

const latin1 = (text: string) => Buffer.from(text, 'latin1');

test('decodeLine keeps valid UTF-8 and escapes every other byte, so no two names collapse into one', () => {
  assert.equal(decodeLine(Buffer.from('STOR café ✓ 𝄞.txt')), 'STOR café ✓ 𝄞.txt');
  const a = decodeLine(latin1('STOR café.txt'));
  const b = decodeLine(latin1('STOR cafè.txt'));
  assert.notEqual(a, b);
  assert.ok(!a.includes('\ufffd'));
  assert.ok(hasInvalidBytes(a) && hasInvalidBytes(b));
  assert.ok(!hasInvalidBytes('café 𝄞'), 'a real surrogate pair is not an escape');
  // Overlong, surrogate and truncated sequences are not UTF-8 either.
  for (const bad of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0xff]]) {
    assert.ok(hasInvalidBytes(decodeLine(Buffer.from([0x61, ...bad, 0x62]))), JSON.stringify(bad));
  }
});

test('decodeArgument reads escaped bytes from the legacy code page; without one it refuses', () => {
  const cafe = decodeLine(latin1('café.txt'));
  assert.equal(decodeArgument(cafe, undefined), undefined);
  assert.equal(decodeArgument('café.txt', undefined), 'café.txt');
  assert.equal(decodeArgument(cafe, 'latin1'), 'café.txt');
  assert.equal(decodeArgument(decodeLine(latin1('cafè.txt')), 'latin1'), 'cafè.txt');
  assert.equal(decodeArgument(decodeLine(Buffer.from([0x80, 0x20, 0x9c])), 'cp1252'), '€ œ');
  assert.equal(decodeArgument(decodeLine(Buffer.from([0x82, 0x74, 0xe9])), 'cp437'), 'étΘ');
  // Valid UTF-8 next to invalid bytes: the whole argument is the client's bytes, read in its code page.
  assert.equal(decodeArgument(decodeLine(Buffer.concat([latin1('é'), Buffer.from('/x')])), 'latin1'), 'é/x');
});

test('encodeLegacy is the inverse for every character of each code page; others become ?', () => {
  for (const encoding of LEGACY_ENCODINGS) {
    for (let byte = 0x20; byte < 256; byte++) {
      if (byte === 0x7f) continue;
      const text = decodeArgument(decodeLine(Buffer.from([0xff, byte])), encoding)!;
      assert.deepEqual(encodeLegacy(text, encoding), Buffer.from([0xff, byte]), `${encoding} ${byte}`);
    }
  }
  assert.deepEqual(encodeLegacy('é✓', 'latin1'), Buffer.from([0xe9, 0x3f]));
  assert.deepEqual(encodeLegacy('€', 'cp1252'), Buffer.from([0x80]));
  assert.deepEqual(encodeLegacy('é', 'cp437'), Buffer.from([0x82]));
});

test('resolveFtpPath: bytes that are not UTF-8 are 553 (InvalidName) unless a legacy encoding reads them', () => {
  const arg = decodeLine(latin1('dir/café.txt'));
  assert.throws(() => resolveFtpPath('/', arg), (err: unknown) => err instanceof StorageError && err.code === 'InvalidName' && /UTF-8/.test(err.message));
  assert.equal(resolveFtpPath('/', arg, { legacyEncoding: 'latin1' }), '/dir/café.txt');
  assert.equal(resolveFtpPath('/', 'dir/café.txt', { legacyEncoding: 'cp437' }), '/dir/café.txt', 'valid UTF-8 stays UTF-8');
});

test('LineReader: escapes invalid bytes; drops the Telnet DM that an out-of-band IAC leaves before ABOR', () => {
  const reader = new LineReader(512);
  reader.feed(Buffer.concat([latin1('STOR café\r\n'), Buffer.from([0xff, 0xf4, 0xf2]), Buffer.from('ABOR\r\n'), Buffer.from('MKD ü\r\n')]));
  const first = reader.next();
  assert.ok(first && 'line' in first && hasInvalidBytes(first.line));
  assert.deepEqual(reader.next(), { line: 'ABOR' });
  assert.deepEqual(reader.next(), { line: 'MKD ü' });
});
