import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { drivers, PASSWORD, startTestServer, tempDir, USER, type TestServer } from './helpers/server.js';

const run = promisify(execFile);
const here = fileURLToPath(new URL('.', import.meta.url));
// Compiled tests live in dist/test; the Python script stays in the source tree.
const ftplibScript = join(here, '..', '..', 'test', 'clients', 'ftplib_session.py');

async function which(cmd: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

const haveCurl = await which('curl');
const haveLftp = await which('lftp');
const havePython = await which('python3');
/** Under CI every client must be there: a missing one fails rather than skips. */
function missing(have: boolean, name: string): string | undefined {
  if (have) return undefined;
  if (process.env.CI) throw new Error(`${name} is not installed (CI requires it; .ci/run installs it)`);
  return `${name} is not installed`;
}

for (const driver of await drivers()) {
  describe(`real clients (${driver.name})`, { skip: driver.skip }, () => {
    let server: TestServer;
    let url: string;
    const work = tempDir();
    before(async () => {
      server = await startTestServer(driver);
      url = `ftp://${encodeURIComponent(USER)}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}`;
    });
    after(async () => {
      await server?.close();
    });

    for (const mode of ['passive', 'active'] as const) {
      test(`curl: upload, list, download, rename and delete (${mode})`, { skip: missing(haveCurl, 'curl') }, async () => {
        const modeArgs = mode === 'active' ? ['--ftp-port', '127.0.0.1'] : ['--ftp-pasv'];
        const curl = (...args: string[]) => run('curl', ['-sS', '-v', '--max-time', '60', ...modeArgs, ...args]);
        const src = join(work, `curl-${mode}.bin`);
        const body = randomBytes(200_000);
        writeFileSync(src, body);
        const dir = `curl-${mode}`;
        let r = await curl('--ftp-create-dirs', '-T', src, `${url}/${dir}/file%20one.bin`);
        assert.match(r.stderr, /< 226 /);
        r = await curl(`${url}/${dir}/`);
        assert.match(r.stdout, /^-rw-r--r-- 1 ftp ftp +200000 .* file one\.bin$/m);
        r = await curl('--list-only', `${url}/${dir}/`);
        assert.match(r.stdout, /^file one\.bin\r?\n$/);
        const dst = join(work, `curl-${mode}.out`);
        r = await curl('-o', dst, `${url}/${dir}/file%20one.bin`);
        assert.deepEqual(readFileSync(dst), body);
        r = await curl('-C', '100000', '-o', `${dst}.part`, `${url}/${dir}/file%20one.bin`);
        assert.match(r.stderr, /> REST 100000/);
        assert.deepEqual(readFileSync(`${dst}.part`), body.subarray(100_000));
        r = await curl('-Q', `RNFR ${dir}/file one.bin`, '-Q', `RNTO ${dir}/renamed.bin`, '-Q', `DELE ${dir}/renamed.bin`, '-Q', `RMD ${dir}`, `${url}/`);
        assert.match(r.stderr, /< 350 /);
        assert.match(r.stderr, /< 250 Rename successful/);
        assert.match(r.stderr, /< 250 Delete operation successful/);
        assert.match(r.stderr, /< 250 Remove directory operation successful/);
        await assert.rejects(curl(`${url}/${dir}/renamed.bin`), /RETR response: 550|550/);
      });

      test(`Python ftplib: a full session (${mode})`, { skip: missing(havePython, 'python3') }, async () => {
        const { stdout } = await run('python3', [ftplibScript, String(server.port), USER, PASSWORD, mode], { timeout: 60_000 });
        const out = JSON.parse(stdout);
        assert.equal(out.connect, '220');
        assert.equal(out.login, '230');
        assert.equal(out.mkd, '/py dir ü');
        assert.equal(out.cwd, '250');
        assert.equal(out.pwd, '/py dir ü');
        assert.equal(out.stor, '226');
        assert.deepEqual(out.nlst, ['upload ✓.bin']);
        assert.equal(out.list, '226');
        assert.match(out.list_lines[0], /^-rw-r--r-- 1 ftp ftp +300000 .* upload ✓\.bin$/);
        assert.deepEqual(out.mlsd, [['upload ✓.bin', 'file', '300000']]);
        assert.equal(out.size, 300000);
        assert.equal(out.retr, '226');
        assert.equal(out.same, true);
        assert.equal(out.retr_rest, '226');
        assert.equal(out.rest_same, true);
        assert.equal(out.rnfr, '350');
        assert.equal(out.rnto, '250');
        assert.equal(out.old_gone, true);
        assert.equal(out.dele, '250');
        assert.equal(out.cdup, '250');
        assert.equal(out.rmd, '250');
        assert.equal(out.quit, '221');
      });

      test(`lftp: mirror up, list, get, mv and rm (${mode})`, { skip: missing(haveLftp, 'lftp') }, async () => {
        const local = join(work, `lftp-${mode}`);
        const src = join(work, `lftp-${mode}.bin`);
        const body = randomBytes(150_000);
        writeFileSync(src, body);
        const script = [
          'set ftp:ssl-allow no',
          `set ftp:passive-mode ${mode === 'passive' ? 'on' : 'off'}`,
          'set net:max-retries 1',
          'set net:timeout 15',
          'set cmd:fail-exit yes',
          `mkdir "lftp ${mode}"`,
          `cd "lftp ${mode}"`,
          `put ${src} -o "lftp file.bin"`,
          'cls -l',
          `get "lftp file.bin" -o ${local}`,
          'mv "lftp file.bin" moved.bin',
          'cls -1',
          'rm moved.bin',
          'cd ..',
          `rmdir "lftp ${mode}"`,
          'bye',
        ].join('; ');
        const { stdout } = await run('lftp', ['-u', `${USER},${PASSWORD}`, '-p', String(server.port), '-e', script, '127.0.0.1'], {
          timeout: 60_000,
        });
        // lftp parses our LIST and prints its own columns: mode, size, date, name.
        assert.match(stdout, /^-rw-r--r-- +150000 [A-Z][a-z]{2} [ \d]\d \d\d:\d\d lftp file\.bin$/m);
        assert.match(stdout, /^moved\.bin$/m);
        assert.deepEqual(readFileSync(local), body);
      });
    }
  });
}
