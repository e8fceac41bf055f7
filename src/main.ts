#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { hashPassword } from './auth/users.js';
import { ConfigError, loadConfig, type Config } from './config/index.js';
import { createLogger } from './log.js';
import { startServer } from './server/server.js';
import { createStorage } from './storage/index.js';

/** The user made up when none is configured; its password is printed once. */
const GENERATED_USER = 's3ftp';

async function serve(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`s3ftp: invalid configuration: ${err.message}\n`);
    process.exit(2);
  }
  if (config.users.length === 0) {
    const password = randomBytes(12).toString('base64url');
    config.users.push({ name: GENERATED_USER, password: { kind: 'plain', value: password }, home: '' });
    // Straight to the terminal, never through the logger: logs must not hold passwords.
    process.stderr.write(
      `\nNo user configured (FTP_USER/FTP_PASSWORD or FTP_USERS_FILE).\n` +
        `Log in as "${GENERATED_USER}" with password: ${password}\n` +
        `This password is random and shown only now.\n\n`,
    );
  }
  const log = createLogger({ level: config.logLevel, pretty: config.logPretty });
  const storage = createStorage(config.storage, log);
  const server = await startServer(config, storage, log);
  const stop = async (signal: string) => {
    log.info({ event: 'shutdown', signal });
    await server.close(config.shutdownGraceMs);
    await storage.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}

async function hashPasswordCommand(arg: string | undefined): Promise<void> {
  let password = arg;
  if (password === undefined) {
    if (process.stdin.isTTY) process.stderr.write('Password: ');
    const rl = createInterface({ input: process.stdin });
    password = await new Promise<string>((resolve) => rl.once('line', resolve).once('close', () => resolve('')));
    rl.close();
  }
  if (!password) {
    process.stderr.write('s3ftp hash-password: empty password\n');
    process.exit(2);
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
}

const [command, arg] = process.argv.slice(2);
if (command === 'hash-password') {
  await hashPasswordCommand(arg);
} else if (command === undefined || command === 'serve') {
  await serve();
} else {
  process.stderr.write('usage: s3ftp [serve] | s3ftp hash-password [password]\n');
  process.exit(2);
}
