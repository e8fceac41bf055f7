import { pino, type Logger } from 'pino';

/**
 * The process logger: JSON lines on stdout, or human-readable lines through
 * pino-pretty for development. Secrets are redacted by path so a careless
 * call site cannot leak them.
 */
export function createLogger(options: { level: string; pretty: boolean }): Logger {
  const settings = {
    level: options.level,
    base: { service: 's3ftp' },
    redact: { paths: ['password', '*.password', 'secretAccessKey', '*.secretAccessKey'], censor: '[redacted]' },
  };
  if (options.pretty) return pino({ ...settings, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard' } } });
  // Asynchronous: lines written while a write is under way go out together in
  // the next one, not one system call each (a line per command adds up). pino
  // flushes what is left when the process exits.
  return pino(settings, pino.destination({ dest: 1, sync: false }));
}

export type { Logger };
