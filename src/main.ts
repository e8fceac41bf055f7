#!/usr/bin/env -S node --max-semi-space-size=2 --heap-growing-percent=50 --expose-gc
import { ExternalAuth } from './auth/external.js';
import { EventSink } from './events/sink.js';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { hashPassword } from './auth/users.js';
import { configSource, loadConfigWithFile, type LoadedConfig } from './config/file.js';
import { ConfigError, type Config } from './config/index.js';
import { createServer } from './index.js';
import type { Logger } from './log.js';
import { createTlsContext } from './server/tls.js';
import { createStorage } from './storage/index.js';
import type { Storage } from './storage/types.js';

/** The user made up when none is configured; its password is printed once. */
const GENERATED_USER = 's3ftp';
/** check-config gives the storage this long to answer. */
const CHECK_TIMEOUT_MS = 15_000;

const USAGE = `Usage: s3ftp [command] [--config FILE]

An FTP server in front of an S3 bucket or a local directory.

Commands:
  serve                    Run the server (the default).
  check-config             Validate the configuration and check that the storage
                           can be reached; exit 0 when both hold, else 1.
  hash-password            Print an scrypt hash for the users file; asks for the
                           password (not echoed), or reads one line from
                           standard input when that is not a terminal.
  help                     Show this text (also --help, -h).
  version                  Print the version (also --version).

Options:
  --config FILE            A JSON file of settings keyed by variable name, e.g.
                           { "FTP_PORT": 2121, "S3_BUCKET": "files" }.
                           Default: $S3FTP_CONFIG. The environment overrides it.

Every setting is an environment variable: see the README's Configuration table.
`;

/** Exit codes: 2 for a usage or configuration error at start, as documented. */
const EXIT_USAGE = 2;

interface Invocation {
  command: string;
  args: string[];
  configFile?: string;
}

/** Splits argv into the command, its positional arguments and --config; exits 2 on anything unknown. */
function parseArgs(argv: string[]): Invocation {
  const positional: string[] = [];
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config' || arg === '-c') {
      configFile = argv[++i];
      if (configFile === undefined || configFile === '') usageError(`${arg} needs a file name`);
    } else if (arg.startsWith('--config=')) {
      configFile = arg.slice('--config='.length);
      if (configFile === '') usageError('--config needs a file name');
    } else if (arg === '--help' || arg === '-h') {
      positional.unshift('help');
    } else if (arg === '--version' || arg === '-V') {
      positional.unshift('version');
    } else if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    } else if (arg.startsWith('-') && arg !== '-') {
      usageError(`unknown option ${arg}`);
    } else {
      positional.push(arg);
    }
  }
  const [command = 'serve', ...args] = positional;
  return { command, args, configFile };
}

function usageError(message: string): never {
  process.stderr.write(`s3ftp: ${message}\n\n${USAGE}`);
  process.exit(EXIT_USAGE);
}

/** The configuration, or one line on stderr and the exit code given. */
function configOrExit(invocation: Invocation, exitCode: number): LoadedConfig {
  try {
    // A key this configuration never reads is a misspelling until proven otherwise: refused.
    return loadConfigWithFile(process.env, configSource(process.env, invocation.configFile), { strict: true });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`s3ftp: invalid configuration: ${err.message}\n`);
    process.exit(exitCode);
  }
}

async function serve(invocation: Invocation): Promise<void> {
  const { config } = configOrExit(invocation, EXIT_USAGE);
  if (config.users.length === 0 && !config.externalAuth) {
    const password = randomBytes(12).toString('base64url');
    config.users.push({ name: GENERATED_USER, password: { kind: 'plain', value: password }, home: '' });
    // Straight to the terminal, never through the logger: logs must not hold passwords.
    process.stderr.write(
      `\nNo user configured (FTP_USER/FTP_PASSWORD, FTP_USERS_FILE or FTP_USERS_JSON).\n` +
        `Log in as "${GENERATED_USER}" with password: ${password}\n` +
        `This password is random and shown only now.\n\n`,
    );
  }
  // As for vsftpd and ProFTPD, SIGHUP re-reads (the users file); without a handler it would end the process.
  // Installed before the listeners, so a SIGHUP sent once 'listening' is logged is never fatal; one that
  // comes while they start is served as soon as they are up.
  let hangup: (() => void) | undefined;
  let hangupPending = false;
  process.on('SIGHUP', () => (hangup ? hangup() : (hangupPending = true)));
  let server: Awaited<ReturnType<typeof createServer>>;
  try {
    server = await createServer(config);
  } catch (err) {
    process.stderr.write(`s3ftp: cannot start: ${startFailure(err, config)}\n`);
    process.exit(EXIT_USAGE);
  }
  const log = server.logger;
  // One client's bug must not end every session: a stray rejection is logged, and the server goes on.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
  void checkStorageAtStart(server.storage, config, log);
  const stop = async (signal: string) => {
    log.info({ event: 'shutdown', signal });
    await server.close(config.shutdownGraceMs);
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  hangup = () => void server.reloadUsers('SIGHUP');
  if (hangupPending) hangup();
}

/** How often a storage that did not answer at start is asked again (it stays not ready meanwhile). */
const STORAGE_RETRY_MS = 30_000;

/**
 * A wrong bucket or wrong credentials would otherwise show only as failing
 * commands: say so once, clearly, at error level, then keep asking until the
 * storage answers (/readyz stays 503 until then).
 */
async function checkStorageAtStart(storage: Storage, config: Config, log: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await storage.ping();
      if (attempt > 1) log.info({ event: 'storage-ready', storage: storageName(config) });
      return;
    } catch (err) {
      if (attempt === 1) log.error({ event: 'storage-unavailable', storage: storageName(config), err }, 'the storage does not answer: check the bucket, endpoint and credentials');
      await new Promise((r) => setTimeout(r, STORAGE_RETRY_MS).unref());
    }
  }
}

/** One line naming the setting at fault, for the start-up failures a user can fix. */
function startFailure(err: unknown, config: Config): string {
  const code = (err as NodeJS.ErrnoException).code;
  const message = (err as Error).message;
  if (code === 'EADDRINUSE') return `FTP_PORT: ${config.host}:${config.port} (or FTPS_IMPLICIT_PORT / HEALTH_PORT) is already in use`;
  if (code === 'EADDRNOTAVAIL') return `FTP_HOST: ${config.host} is not an address of this machine`;
  if (code === 'EACCES') return `FTP_PORT: not allowed to listen on ${config.host}:${config.port} (ports below 1024 need privileges)`;
  if (config.ftps && /key values mismatch|PEM|certificate|private key|asn1|decoder/i.test(message)) {
    return `FTPS_CERT_FILE/FTPS_KEY_FILE: the certificate and key cannot be used together (${message})`;
  }
  return message;
}

/** Validates the configuration and pings the storage; exit 0 when both hold, else 1 with one message. */
async function checkConfig(invocation: Invocation): Promise<void> {
  const { config, file } = configOrExit(invocation, 1);
  if (config.ftps) {
    // Reading the PEM files is not enough: a certificate and a key that do not belong together fail only here.
    try {
      createTlsContext(config.ftps);
    } catch (err) {
      process.stderr.write(`s3ftp: invalid configuration: FTPS_CERT_FILE/FTPS_KEY_FILE: the certificate and key cannot be used together (${(err as Error).message})\n`);
      process.exit(1);
    }
  }
  process.stdout.write(`configuration: ok${file ? ` (${file} and the environment)` : ' (environment)'}\n`);
  process.stdout.write(describe(config));
  const storage = createStorage(config.storage);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      storage.ping(),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS / 1000} s`)), CHECK_TIMEOUT_MS))),
    ]);
  } catch (err) {
    process.stderr.write(`s3ftp: storage unreachable: ${storageName(config)}: ${(err as Error).message}\n`);
    process.exit(1);
  } finally {
    clearTimeout(timer);
    await storage.close();
  }
  process.stdout.write(`storage: ok (${storageName(config)} answered)\n`);
  process.exit(0);
}

function storageName(config: Config): string {
  const s = config.storage;
  if (s.kind === 'local') return `local directory ${s.dataDir}`;
  return `s3://${s.bucket}/${s.prefix}${s.endpoint ? ` at ${s.endpoint}` : ''}`;
}

/** What the server would do with this configuration, one line per item; never a secret. */
function describe(config: Config): string {
  const lines = [
    `  listen: ${config.host}:${config.port}${config.proxyProtocol ? ' (PROXY protocol required)' : ''}`,
    `  passive: ports ${config.pasvPorts ? `${config.pasvPorts.min}-${config.pasvPorts.max}` : 'any'}, address ${config.pasvAddress ?? 'of the control connection'}`,
    `  storage: ${storageName(config)}`,
    `  users: ${config.users.length === 0 ? 'none (serve makes up one with a random password)' : config.users.map((u) => u.name).join(', ')}`,
    ...(config.usersFile
      ? [`  users ${config.usersFile.secretId ? 'secret' : 'file'}: ${config.usersFile.secretId ?? config.usersFile.path}, re-read on SIGHUP${config.usersFile.reloadMs > 0 ? ` and every ${config.usersFile.reloadMs / 1000} s` : ''}`]
      : []),
    `  ftps: ${config.ftps ? `on${config.ftps.implicitPort !== undefined ? `, implicit port ${config.ftps.implicitPort}` : ''}` : 'off'}`,
    `  health: ${config.health ? `http://${config.health.host}:${config.health.port}/healthz, /readyz, /metrics` : 'off'}`,
  ];
  return `${lines.join('\n')}\n`;
}

async function hashPasswordCommand(arg: string | undefined): Promise<void> {
  let password = arg;
  if (password !== undefined) {
    // Kept for scripts that still pass it; every other user of the machine can read it in ps.
    process.stderr.write('s3ftp hash-password: warning: a password on the command line is visible to other users (ps); pipe it on standard input instead\n');
  } else if (process.stdin.isTTY) {
    password = await promptHidden('Password: ');
    if (password && (await promptHidden('Again: ')) !== password) {
      process.stderr.write('s3ftp hash-password: the passwords differ\n');
      process.exit(EXIT_USAGE);
    }
  } else {
    const rl = createInterface({ input: process.stdin });
    password = await new Promise<string>((resolve) => rl.once('line', resolve).once('close', () => resolve('')));
    rl.close();
  }
  if (!password) {
    process.stderr.write('s3ftp hash-password: empty password\n');
    process.exit(EXIT_USAGE);
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
}

/** Reads one line from the terminal without echoing it; Ctrl-C exits 130, Ctrl-D ends the line. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  return new Promise((resolve) => {
    let line = '';
    const done = () => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      resolve(line);
    };
    const onData = (chunk: string) => {
      for (const char of chunk) {
        if (char === '\r' || char === '\n' || char === '\u0004') return done();
        if (char === '\u0003') {
          stdin.setRawMode(false);
          process.stderr.write('\n');
          process.exit(130);
        }
        if (char === '\u007f' || char === '\b') line = line.slice(0, -1);
        else if (char >= ' ') line += char;
      }
    };
    stdin.on('data', onData);
  });
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const invocation = parseArgs(process.argv.slice(2));
switch (invocation.command) {
  case 'serve':
    if (invocation.args.length > 0) usageError(`serve takes no argument`);
    await serve(invocation);
    break;
  case 'check-config':
    if (invocation.args.length > 0) usageError(`check-config takes no argument`);
    await checkConfig(invocation);
    break;
  case 'hash-password':
    await hashPasswordCommand(invocation.args[0]);
    break;
  case 'help':
    process.stdout.write(USAGE);
    break;
  case 'version':
    process.stdout.write(`s3ftp ${version()}\n`);
    break;
  default:
    usageError(`unknown command "${invocation.command}"`);
}
