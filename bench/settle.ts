/**
 * What the upload commit rule's settle time buys, per FTP_UPLOAD_SETTLE_MS:
 * how many uploads that their clients did not finish were still published.
 *
 *   node dist/bench/settle.js
 *
 * One local-driver server per settle value, all running at once; every
 * attempt goes to each of them in turn, in a new order each time. Two ways a
 * client fails to finish:
 *
 * - **source fails**: an ftplib script whose source raises after 64 KiB.
 *   ftplib's `with` closes the data connection cleanly (a FIN) and the
 *   uncaught exception ends the process, which closes the control
 *   connection a few ms later. Nothing on the data connection tells this
 *   from a finished upload.
 * - **killed**: curl, ftplib, lftp and rclone uploading a sparse 4 GiB file,
 *   sent KILL, TERM or INT 600–1100 ms in (all are sending by then, none is
 *   near the end); whatever survives it is killed 300 ms later.
 *
 * The file must not exist afterwards: one under its name was published,
 * truncated.
 *
 *   SETTLE_VALUES   comma-separated ms (default 0,2,5,10)
 *   SETTLE_ROUNDS   rounds (default 3); a round is 10 failing sources and one
 *                   kill per client and signal, for each value
 *   SETTLE_CLIENTS  comma-separated subset of curl,ftplib,lftp,rclone to kill
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, ftruncateSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { buildBinary, scratch, startS3ftp, type FtpPeer } from './peers.js';

const run = promisify(execFile);
const VALUES = (process.env.SETTLE_VALUES ?? '0,2,5,10').split(',').map(Number);
const ROUNDS = Number(process.env.SETTLE_ROUNDS ?? 3);
const SOURCE_FAILS_PER_ROUND = 10;
const CLIENTS = (process.env.SETTLE_CLIENTS ?? 'curl,ftplib,lftp,rclone').split(',');
const SIGNALS = ['SIGKILL', 'SIGTERM', 'SIGINT'] as const;
const SOURCE_BYTES = 4 * 1024 ** 3;
/** Every client is logged in and sending by then (rclone starts slowest), and far from done. */
const KILL_AFTER_MS = 600;

const FAILING_SOURCE = `
import ftplib, sys
class Source:
    sent = 0
    def read(self, size):
        if self.sent >= 65536:
            raise OSError('the source went away')
        self.sent += size
        return b'x' * size
f = ftplib.FTP()
f.connect('127.0.0.1', int(sys.argv[1]))
f.login(sys.argv[2], sys.argv[3])
f.storbinary('STOR ' + sys.argv[4], Source(), 8192)
`;

const FTPLIB = `
import ftplib, sys
f = ftplib.FTP()
f.connect('127.0.0.1', int(sys.argv[1]))
f.login(sys.argv[2], sys.argv[3])
with open(sys.argv[4], 'rb') as fh:
    f.storbinary('STOR ' + sys.argv[5], fh, 65536)
`;

interface Target {
  value: number;
  peer: FtpPeer;
  dir: string;
}

type Launch = (t: Target, source: string, name: string) => ChildProcess;

/** Clients still running, killed if the bench itself ends early. */
const running = new Set<ChildProcess>();
process.once('exit', () => running.forEach((child) => child.kill('SIGKILL')));

function launchers(rclone: string | undefined, obscured: Map<string, string>): Record<string, Launch> {
  const spawnClient = (command: string, args: string[]): ChildProcess => {
    // Its own process group: the signal reaches the client only.
    const child = spawn(command, args, { stdio: 'ignore', detached: true });
    running.add(child);
    child.once('exit', () => running.delete(child));
    return child;
  };
  return {
    curl: (t, source, name) => spawnClient('curl', ['-sS', '-T', source, `ftp://${t.peer.user}:${t.peer.password}@127.0.0.1:${t.peer.port}/${name}`]),
    ftplib: (t, source, name) => spawnClient('python3', ['-c', FTPLIB, String(t.peer.port), t.peer.user, t.peer.password, source, name]),
    'source fails': (t, _source, name) => spawnClient('python3', ['-c', FAILING_SOURCE, String(t.peer.port), t.peer.user, t.peer.password, name]),
    lftp: (t, source, name) =>
      spawnClient('lftp', ['-u', `${t.peer.user},${t.peer.password}`, '-e', `set net:max-retries 1; put ${source} -o ${name}; quit`, `ftp://127.0.0.1:${t.peer.port}`]),
    rclone: (t, source, name) =>
      spawnClient(rclone!, [
        'copyto', '--retries', '1', '--low-level-retries', '1', source,
        `:ftp,host=127.0.0.1,port=${t.peer.port},user=${t.peer.user},pass=${obscured.get(t.peer.password)}:${name}`,
      ]),
  };
}


async function main(): Promise<void> {
  const source = join(scratch('settle-source'), 'zeros');
  const fd = openSync(source, 'w');
  ftruncateSync(fd, SOURCE_BYTES);
  closeSync(fd);
  const rclone = CLIENTS.includes('rclone') ? await buildBinary('build-rclone.sh') : undefined;

  const targets: Target[] = [];
  for (const value of VALUES) {
    const dir = scratch(`settle-${value}`);
    const peer = await startS3ftp({ DATA_DIR: dir }, { FTP_UPLOAD_SETTLE_MS: String(value) }, `settle ${value} ms`);
    targets.push({ value, peer, dir });
  }
  const obscured = new Map<string, string>();
  for (const t of rclone ? targets : []) {
    obscured.set(t.peer.password, (await run(rclone!, ['obscure', t.peer.password])).stdout.trim());
  }
  const launch = launchers(rclone, obscured);
  /** By settle value, then column: [attempts, truncated files published]. */
  const results = new Map<number, Map<string, [number, number]>>();
  const columns = ['source fails', ...CLIENTS.map((c) => `${c} killed`)];
  let n = 0;
  let early = 0;
  /** One failing upload on each server, in a new order each time (none is always first after a pause). */
  const attempt = async (column: string, fail: (t: Target, name: string) => Promise<boolean>): Promise<void> => {
    for (const t of [...targets].sort(() => Math.random() - 0.5)) {
      const name = `u${n++}`;
      if (!(await fail(t, name))) {
        early++;
        continue;
      }
      // The commit rule and the publish are long over by then.
      await sleep(t.value + 300);
      const published = existsSync(join(t.dir, name)) && statSync(join(t.dir, name)).size < SOURCE_BYTES;
      const byColumn = results.get(t.value) ?? new Map<string, [number, number]>();
      results.set(t.value, byColumn);
      const [tries, truncated] = byColumn.get(column) ?? [0, 0];
      byColumn.set(column, [tries + 1, truncated + (published ? 1 : 0)]);
    }
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < SOURCE_FAILS_PER_ROUND; i++) {
      await attempt('source fails', async (t, name) => {
        const child = launch['source fails']!(t, source, name);
        await once(child, 'exit');
        return true;
      });
    }
    for (const client of CLIENTS) {
      for (const signal of SIGNALS) {
        await attempt(`${client} killed`, async (t, name) => {
          const child = launch[client]!(t, source, name);
          const exited = once(child, 'exit');
          await sleep(KILL_AFTER_MS + Math.random() * 500);
          // Failed or finished on its own: no kill to count.
          if (child.exitCode !== null || child.signalCode !== null) return false;
          child.kill(signal);
          const timer = setTimeout(() => child.kill('SIGKILL'), 300);
          await exited;
          clearTimeout(timer);
          return true;
        });
      }
    }
    process.stderr.write(`settle: round ${round + 1} of ${ROUNDS} done\n`);
  }
  for (const t of targets) await t.peer.stop();

  const lines = [
    `Uploads their clients did not finish, local driver, loopback, ${ROUNDS} rounds: truncated files published, of attempts`,
    '',
    `| FTP_UPLOAD_SETTLE_MS | ${columns.join(' | ')} |`,
    `| ---: | ${columns.map(() => '---:').join(' | ')} |`,
  ];
  for (const value of VALUES) {
    const byColumn = results.get(value) ?? new Map<string, [number, number]>();
    lines.push(`| ${value} | ${columns.map((c) => { const [tries, truncated] = byColumn.get(c) ?? [0, 0]; return `${truncated} of ${tries}`; }).join(' | ')} |`);
  }
  if (early > 0) lines.push('', `${early} clients had exited before their signal; they are not counted.`);
  console.log(lines.join('\n'));
}

await main();
