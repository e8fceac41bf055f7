import { pino, type Logger } from 'pino';

/**
 * The process logger: JSON lines on stdout, or human-readable lines through
 * pino-pretty for development. Secrets are redacted by path so a careless
 * call site cannot leak them.
 */
export function createLogger(options: { level: string; pretty: boolean }): Logger {
  return pino({
    level: options.level,
    base: { service: 's3ftp' },
    redact: { paths: ['password', '*.password', 'secretAccessKey', '*.secretAccessKey'], censor: '[redacted]' },
    ...(options.pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard' } } } : {}),
  });
}

export type { Logger };
