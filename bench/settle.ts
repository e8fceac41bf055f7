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
 * - **killed**: curl, ftplib, lftp and rclone (`--inplace`, so that it
 *   writes under the name itself) uploading a sparse 4 GiB file, sent KILL,
 *   TERM or INT 600–1100 ms in (all are sending by then, none is near the
 *   end); whatever survives it is killed 300 ms later.
 *
 * Once every attempt is over, the servers are stopped (nothing can be
 * published after that), and each name is looked up: a file under it was
 * published, truncated. Only the local driver is measured: on S3 the rule is
 * the same code, and the storage's own last steps differ.
 *
 *   SETTLE_VALUES   comma-separated ms (default 0,2,5,10)
 *   SETTLE_ROUNDS   rounds (default 3); a round is 10 failing sources and one
 *                   kill per client and signal, for each value
 *   SETTLE_CLIENTS  comma-separated subset of curl,ftplib,lftp,rclone to kill
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rcloneFtpEnv } from '../test/helpers/rclone.js';
import { buildBinary, scratch, startS3ftp, type FtpPeer } from './peers.js';

const VALUES = (process.env.SETTLE_VALUES ?? '0,2,5,10').split(',').map(Number);
const ROUNDS = Number(process.env.SETTLE_ROUNDS ?? 3);
const SOURCE_FAILS_PER_ROUND = 10;
const KILLED = ['curl', 'ftplib', 'lftp', 'rclone'] as const;
type Killed = (typeof KILLED)[number];
const CLIENTS = (process.env.SETTLE_CLIENTS ?? KILLED.join(',')).split(',') as Killed[];
const SIGNALS = ['SIGKILL', 'SIGTERM', 'SIGINT'] as const;
const SOURCE_BYTES = 4 * 1024 ** 3;
/** Every client is logged in and sending by then (rclone starts slowest), and far from done. */
const KILL_AFTER_MS = 600;
/** A client still running this long after it should have ended is killed. */
const EXIT_TIMEOUT_MS = 15_000;

const FAILING_SOURCE = `
import ftplib, sys
class Source:
    sent = 0
    def read(self, size):
        if self.sent >= 65536:
            raise OSError('the source went away')
        self.sent += size
        return b'x' * size
f = ftplib.FTP(timeout=10)
f.connect('127.0.0.1', int(sys.argv[1]))
f.login(sys.argv[2], sys.argv[3])
f.storbinary('STOR ' + sys.argv[4], Source(), 8192)
`;

const FTPLIB = `
import ftplib, sys
f = ftplib.FTP(timeout=10)
f.connect('127.0.0.1', int(sys.argv[1]))
f.login(sys.argv[2], sys.argv[3])
with open(sys.argv[4], 'rb') as fh:
    f.storbinary('STOR ' + sys.argv[5], fh, 65536)
`;

interface Target {
  value: number;
  peer: FtpPeer;
  dir: string;
  /** What makes rclone's `:ftp:` this server. */
  rcloneEnv?: Record<string, string>;
}

/** Clients still running, killed (with their process group) if the bench itself ends early. */
const running = new Set<ChildProcess>();
process.once('exit', () => running.forEach((child) => killGroup(child)));

function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Starts a client in a process group of its own (a Ctrl-C at the terminal
 * reaches the bench, which then kills the group), with HOME in a scratch
 * directory (lftp keeps a history there).
 */
function spawnClient(command: string, args: string[], home: string, env: Record<string, string | undefined> = process.env): Client {
  const child = spawn(command, args, { stdio: 'ignore', detached: true, env: { ...env, HOME: home } });
  running.add(child);
  // A client that cannot start (not installed) ends there.
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  }).finally(() => running.delete(child));
  return { child, exit };
}

interface Client {
  child: ChildProcess;
  /** Resolves once it has ended (or failed to start). */
  exit: Promise<void>;
}

/** Waits for the client to end, killing it after `ms`. */
async function ended({ child, exit }: Client, ms: number): Promise<void> {
  const timer = setTimeout(() => killGroup(child), ms);
  await exit;
  clearTimeout(timer);
}

/** Fisher–Yates: the order of the servers changes every time, so none is always first after a pause. */
function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function main(): Promise<void> {
  const unknown = CLIENTS.filter((c) => !KILLED.includes(c));
  if (unknown.length > 0) throw new Error(`SETTLE_CLIENTS: unknown ${unknown.join(', ')} (known: ${KILLED.join(', ')})`);
  const home = scratch('settle-home');
  const source = join(scratch('settle-source'), 'zeros');
  const fd = openSync(source, 'w');
  ftruncateSync(fd, SOURCE_BYTES);
  closeSync(fd);
  const rclone = CLIENTS.includes('rclone') ? await buildBinary('build-rclone.sh') : undefined;

  const targets: Target[] = [];
  for (const value of VALUES) {
    const dir = scratch(`settle-${value}`);
    const peer = await startS3ftp({ DATA_DIR: dir }, { FTP_UPLOAD_SETTLE_MS: String(value) }, `settle ${value} ms`);
    targets.push({ value, peer, dir, rcloneEnv: rclone === undefined ? undefined : await rcloneFtpEnv(rclone, peer.port, peer.user, peer.password) });
  }
  const killable: Record<Killed, (t: Target, name: string) => Client> = {
    curl: (t, name) => spawnClient('curl', ['-sS', '-T', source, `ftp://${t.peer.user}:${t.peer.password}@127.0.0.1:${t.peer.port}/${name}`], home),
    ftplib: (t, name) => spawnClient('python3', ['-c', FTPLIB, String(t.peer.port), t.peer.user, t.peer.password, source, name], home),
    lftp: (t, name) =>
      spawnClient('lftp', ['-u', `${t.peer.user},${t.peer.password}`, '-e', `set net:max-retries 1; put ${source} -o ${name}; quit`, `ftp://127.0.0.1:${t.peer.port}`], home),
    rclone: (t, name) => spawnClient(rclone!, ['copyto', '--inplace', '--retries', '1', '--low-level-retries', '1', source, `:ftp:${name}`], home, t.rcloneEnv),
  };

  /** Every attempt that counts: its server, its column, and the name it uploaded to. */
  const attempts: Array<{ target: Target; column: string; name: string }> = [];
  let n = 0;
  let early = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < SOURCE_FAILS_PER_ROUND; i++) {
      for (const target of shuffled(targets)) {
        const name = `u${n++}`;
        await ended(spawnClient('python3', ['-c', FAILING_SOURCE, String(target.peer.port), target.peer.user, target.peer.password, name], home), EXIT_TIMEOUT_MS);
        attempts.push({ target, column: 'source fails', name });
      }
    }
    for (const client of CLIENTS) {
      for (const signal of SIGNALS) {
        for (const target of shuffled(targets)) {
          const name = `u${n++}`;
          const started = killable[client](target, name);
          await sleep(KILL_AFTER_MS + Math.random() * 500);
          if (!running.has(started.child)) {
            // Failed or finished on its own: no kill to count.
            early++;
            continue;
          }
          started.child.kill(signal);
          await ended(started, 300);
          attempts.push({ target, column: `${client} killed`, name });
        }
      }
    }
    process.stderr.write(`settle: round ${round + 1} of ${ROUNDS} done\n`);
  }
  // Stopped, a server publishes nothing more: what is there now is all that was published.
  for (const t of targets) await t.peer.stop();

  const columns = ['source fails', ...CLIENTS.map((c) => `${c} killed`)];
  const lines = [
    `Uploads their clients did not finish, local driver, loopback, ${ROUNDS} rounds: truncated files published, of attempts`,
    '',
    `| FTP_UPLOAD_SETTLE_MS | ${columns.join(' | ')} |`,
    `| ---: | ${columns.map(() => '---:').join(' | ')} |`,
  ];
  for (const value of VALUES) {
    const cells = columns.map((column) => {
      const mine = attempts.filter((a) => a.target.value === value && a.column === column);
      const published = mine.filter((a) => existsSync(join(a.target.dir, a.name))).length;
      return `${published} of ${mine.length}`;
    });
    lines.push(`| ${value} | ${cells.join(' | ')} |`);
  }
  if (early > 0) lines.push('', `${early} clients had exited before their signal; they are not counted.`);
  console.log(lines.join('\n'));
}

await main();
