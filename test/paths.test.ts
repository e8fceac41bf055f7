import assert from 'node:assert/strict';
import { test } from 'node:test';
import { homeToStoragePath, resolveFtpPath } from '../src/paths.js';
import { StorageError } from '../src/storage/types.js';

test('resolveFtpPath normalises and never leaves the root', () => {
  const cases: Array<[cwd: string, arg: string, expected: string]> = [
    ['/', '', '/'],
    ['/', '.', '/'],
    ['/', '/', '/'],
    ['/', 'a', '/a'],
    ['/', '/a/b/', '/a/b'],
    ['/a', 'b', '/a/b'],
    ['/a', '/b', '/b'],
    ['/a/b', '..', '/a'],
    ['/a/b', '../..', '/'],
    ['/a/b', '../../..', '/'],
    ['/', '..', '/'],
    ['/', '../../../../etc/passwd', '/etc/passwd'],
    ['/a', '../../b/../../c', '/c'],
    ['/', 'a//b///c', '/a/b/c'],
    ['/', './a/./b/.', '/a/b'],
    ['/', '...', '/...'],
    ['/', '..a', '/..a'],
    ['/', 'a..', '/a..'],
    ['/', '%2e%2e/%2e%2e', '/%2e%2e/%2e%2e'],
    ['/', 'naïve file ✓.txt', '/naïve file ✓.txt'],
    ['/', ' spaced ', '/ spaced '],
    ['/x', '/..', '/'],
    // A backslash is an ordinary character (S3 and Linux names hold it).
    ['/', 'a\\b', '/a\\b'],
    ['/d', 'x\\y\\z.txt', '/d/x\\y\\z.txt'],
    ['/', 'trailing\\', '/trailing\\'],
    ['/', '...\\x', '/...\\x'],
  ];
  for (const [cwd, arg, expected] of cases) {
    assert.equal(resolveFtpPath(cwd, arg), expected, `${cwd} + ${arg}`);
  }
});

test('resolveFtpPath refuses names no driver may see', () => {
  const bad = ['..\\..\\etc', 'a\\..\\..\\etc', '\\etc', 'C:\\Windows\\x', 'x/.. \\y', 'a\0b', 'x'.repeat(256), '.s3ftp-partial', 'dir/.s3ftp-upload-1'];
  for (const arg of bad) {
    assert.throws(() => resolveFtpPath('/', arg), (err: unknown) => err instanceof StorageError && err.code === 'InvalidName', arg);
  }
  assert.equal(resolveFtpPath('/', 'é'.repeat(127)), `/${'é'.repeat(127)}`); // 254 bytes
  assert.throws(() => resolveFtpPath('/', 'é'.repeat(128)), StorageError); // 256 bytes
});

test('homeToStoragePath accepts the usual spellings of a home', () => {
  for (const [home, expected] of [['/', ''], ['', ''], ['/alice/', 'alice'], ['alice', 'alice'], ['/a/../b', 'b']]) {
    assert.equal(homeToStoragePath(home!), expected);
  }
});
