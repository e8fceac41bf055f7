import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { LocalStorage } from '../src/storage/local.js';
import { StorageError } from '../src/storage/types.js';

/**
 * Issue 12.3: a link inside the data directory points outside (made out of
 * band); a client renames a directory on a transfer's path away and the
 * directory holding the link into its place, over and over. No read, write,
 * rename or delete may reach outside the root under any interleaving.
 */
const ROUNDS = 400;

describe('local driver confinement under concurrent renames', { skip: process.platform !== 'linux' && 'the guarantee relies on /proc/self/fd' }, () => {
  let root: string;
  let outside: string;
  let storage: LocalStorage;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 's3ftp-confine-'));
    outside = mkdtempSync(join(tmpdir(), 's3ftp-outside-'));
    writeFileSync(join(outside, 'secret'), 'OUTSIDE SECRET');
    writeFileSync(join(outside, 'victim'), 'outside victim');
    storage = new LocalStorage({ kind: 'local', dataDir: root });
    await storage.mkdirAll('good/sub');
    await storage.write('good/sub/secret', Readable.from([Buffer.from('inside')]));
    await storage.write('good/sub/victim', Readable.from([Buffer.from('inside victim')]));
    // The out-of-band link: evil/sub -> outside.
    mkdirSync(join(root, 'evil'));
    symlinkSync(outside, join(root, 'evil', 'sub'));
  });

  after(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  test('reads, writes, appends, renames and deletes stay beneath the root', { timeout: 120_000 }, async () => {
    let racing = true;
    let swaps = 0;
    // The swapper: good/ and evil/ change places, as RNFR/RNTO would make them (done on the
    // file system directly so that every swap succeeds and the race runs as fast as it can).
    const swapper = (async () => {
      while (racing) {
        for (const [from, to] of [['good', 'tmp'], ['evil', 'good'], ['good', 'evil'], ['tmp', 'good']] as const) {
          await rename(join(root, from), join(root, to)).then(() => swaps++, () => undefined);
        }
      }
    })();
    const seen: string[] = [];
    const tolerate = (err: unknown): undefined => {
      if (!(err instanceof StorageError)) throw err;
      return undefined;
    };
    try {
      for (let i = 0; i < ROUNDS; i++) {
        await Promise.all([
          storage
            .read('good/sub/secret')
            .then(async ({ stream }) => seen.push(Buffer.concat((await stream.toArray()) as Buffer[]).toString()))
            .catch(tolerate),
          storage.write(`good/sub/new-${i}`, Readable.from([Buffer.from('written')])).catch(tolerate),
          storage.write('good/sub/victim', Readable.from([Buffer.from('!')]), { append: true }).catch(tolerate),
          storage.rename('good/sub/secret', `good/sub/moved-${i}`).then(() => storage.rename(`good/sub/moved-${i}`, 'good/sub/secret')).catch(tolerate),
          storage.delete(`good/sub/new-${i - 1}`).catch(tolerate),
          storage.mkdir(`good/sub/dir-${i}`).catch(tolerate),
        ]);
      }
    } finally {
      racing = false;
      await swapper;
    }
    assert.ok(swaps > ROUNDS, `the race ran (${swaps} swaps)`);
    assert.ok(seen.length > 0, 'some reads got through');
    assert.deepEqual([...new Set(seen)].filter((s) => s !== 'inside'), [], 'nothing was read from outside');
    assert.deepEqual(readdirSync(outside).sort(), ['secret', 'victim'], 'nothing was created or removed outside');
    assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'outside victim', 'nothing was appended outside');
    assert.equal(readFileSync(join(outside, 'secret'), 'utf8'), 'OUTSIDE SECRET');
  });
});

describe('local driver: files that are neither regular files nor directories', { skip: process.platform !== 'linux' && 'mkfifo' }, () => {
  test('a FIFO (or a socket) another process left in DATA_DIR is no file (NotFound), and nothing that opens one blocks', { timeout: 30_000 }, async () => {
    const root = mkdtempSync(join(tmpdir(), 's3ftp-fifo-'));
    try {
      execFileSync('mkfifo', [join(root, 'pipe')]);
      const storage = new LocalStorage({ kind: 'local', dataDir: root });
      // Got: SIZE 213 0, and a RETR that held a thread-pool thread in open() until something wrote to the FIFO.
      await assert.rejects(storage.stat('pipe'), (err: StorageError) => err.code === 'NotFound');
      await assert.rejects(storage.read('pipe'), (err: StorageError) => err.code === 'NotFound');
      await assert.rejects(storage.hash('pipe', 'SHA-256'), (err: StorageError) => err.code === 'NotFound');
      await assert.rejects(storage.delete('pipe'), (err: StorageError) => err.code === 'NotFound');
      for await (const page of storage.list('')) assert.deepEqual(page, []);
      // An upload of that name, an append too, finds nothing there and takes its place.
      await storage.write('pipe', Readable.from([Buffer.from('appended')]), { append: true });
      const { stream } = await storage.read('pipe');
      assert.equal(Buffer.concat(await stream.toArray()).toString(), 'appended');
      // A FIFO where a file's sidecar goes: setting its time neither blocks nor fails.
      rmSync(join(root, '.s3ftp-meta', 'pipe.json'), { force: true });
      execFileSync('mkfifo', [join(root, '.s3ftp-meta', 'pipe.json')]);
      await storage.setModificationTime('pipe', new Date('2020-01-02T03:04:05Z'));
      assert.equal((await storage.stat('pipe')).mtime.toISOString(), '2020-01-02T03:04:05.000Z');
      // A UNIX socket (open(2) fails with ENXIO) is no file either: 550, not "try again later".
      const socket = createServer();
      await new Promise<void>((resolve) => socket.listen(join(root, 'socket'), resolve));
      try {
        await assert.rejects(storage.read('socket'), (err: StorageError) => err.code === 'NotFound');
      } finally {
        socket.close();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
