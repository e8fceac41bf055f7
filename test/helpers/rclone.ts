import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** This file runs as dist/test/helpers/rclone.js, three levels below the repository root. */
const BUILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'scripts', 'build-rclone.sh');

let binary: Promise<string | undefined> | undefined;

/**
 * The pinned rclone (scripts/build-rclone.sh builds it once into the cache;
 * .ci/run does so before the tests). Undefined when it cannot be had and CI
 * is not set; under CI that is a failure, never a skip.
 */
export function rcloneBinary(): Promise<string | undefined> {
  binary ??= promisify(execFile)('bash', [BUILD_SCRIPT], { timeout: 30 * 60_000, maxBuffer: 16 << 20 }).then(
    ({ stdout }) => stdout.trim().split('\n').pop(),
    (err: Error) => {
      if (process.env.CI) throw new Error(`cannot build rclone with ${BUILD_SCRIPT}: ${err.message.split('\n')[0]}`);
      process.stderr.write(`rclone tests skipped: ${err.message.split('\n')[0]}\n`);
      return undefined;
    },
  );
  return binary;
}

/** The environment that makes `:ftp:` in an rclone path mean this server. */
export async function rcloneFtpEnv(rclone: string, port: number, user: string, password: string): Promise<Record<string, string>> {
  const { stdout } = await promisify(execFile)(rclone, ['obscure', password]);
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    RCLONE_CONFIG: '/dev/null',
    RCLONE_FTP_HOST: '127.0.0.1',
    RCLONE_FTP_PORT: String(port),
    RCLONE_FTP_USER: user,
    RCLONE_FTP_PASS: stdout.trim(),
  };
}
