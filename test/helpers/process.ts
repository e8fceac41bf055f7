import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { S3TestEnv } from './minio.js';

/** dist/src/main.js, the file the `s3ftp` bin entry points at. */
export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** The node flags the bin's shebang runs the server with (`#!/usr/bin/env -S node <flags>`). */
export function nodeFlags(): string[] {
  const shebang = readFileSync(MAIN, 'utf8').split('\n', 1)[0]!;
  const words = shebang.replace(/^#!\/usr\/bin\/env -S /, '').split(' ');
  if (words[0] !== 'node') throw new Error(`unexpected shebang: ${shebang}`);
  return words.slice(1);
}

/**
 * The environment `npm start` (`exec env NAME=value ... node ...`) and the
 * image give the server (GLIBC_TUNABLES). The bin's shebang cannot carry it:
 * Linux before 5.1 cuts a shebang line at 127 bytes.
 */
export function launchEnv(): Record<string, string> {
  const { scripts } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
  const words = scripts.start.split(' ');
  const node = words.indexOf('node');
  if (words[0] !== 'exec' || words[1] !== 'env' || node < 0) throw new Error(`unexpected start script: ${scripts.start}`);
  return Object.fromEntries(words.slice(2, node).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
}

/** The environment a child server gets: nothing inherited but PATH and HOME, so the host's AWS_* cannot leak in. */
export function childEnv(settings: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...settings };
}

/** The settings that point a server at the test MinIO, under a key prefix. */
export function s3Settings(s3: S3TestEnv, prefix: string): Record<string, string> {
  return {
    S3_BUCKET: s3.bucket,
    S3_PREFIX: prefix,
    S3_ENDPOINT: s3.endpoint,
    S3_REGION: s3.region,
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  };
}

export interface ServerProcess {
  child: ChildProcess;
  /** The control port from the 'listening' log line. */
  port: number;
  /** The health port from the 'health-listening' log line, when one was configured. */
  healthPort?: number;
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>;
  stderr(): string;
  /** SIGTERM, then SIGKILL after a while; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Every child started here, killed when the test process exits, whatever happened. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/**
 * Starts `command args` (by default the server: node dist/src/main.js) and
 * resolves once it has logged 'listening' (and 'health-listening' when
 * asked); rejects with its stderr if it exits first or takes
 * longer than `timeoutMs`.
 */
export async function startServerProcess(
  env: Record<string, string>,
  /** health: wait for the health port too (implied by HEALTH_PORT in env; say so when a config file sets it). */
  options: { command?: string; args?: string[]; cwd?: string; timeoutMs?: number; health?: boolean } = {},
): Promise<ServerProcess> {
  const child = spawn(options.command ?? process.execPath, options.args ?? [MAIN], {
    // Node itself is run as npm start runs it; a command of its own (npm start) sets its own.
    env: options.command === undefined ? { ...launchEnv(), ...env } : env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let pending = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const wantHealth = options.health ?? env.HEALTH_PORT !== undefined;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in time; stderr: ${stderr}`)), options.timeoutMs ?? 30_000);
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      pending += text;
      let end: number;
      while ((end = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        try {
          logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          continue; // not a log line
        }
        const seen = (event: string) => logs.some((l) => l.event === event);
        if (seen('listening') && (!wantHealth || seen('health-listening'))) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening; stderr: ${stderr}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const port = Number(logs.find((l) => l.event === 'listening')?.port);
  const healthPort = wantHealth ? Number(logs.find((l) => l.event === 'health-listening')?.port) : undefined;
  return {
    child,
    port,
    healthPort,
    logs,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = once(child, 'exit') as Promise<[number | null]>;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const [code] = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
