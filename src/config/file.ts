import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError, loadConfig, type Config } from './index.js';
import { parseSecretJson } from './json.js';

type Env = Record<string, string | undefined>;

/** A setting's name: the environment variable it is read from. */
const SETTING_NAME = /^[A-Z][A-Z0-9_]*$/;
/** Settings that are paths; in a config file they are relative to the file's directory. */
const isPathSetting = (name: string) => name.endsWith('_FILE') || name === 'DATA_DIR';

/** Where a config file was named: the flag or the variable, for error messages. */
export interface ConfigSource {
  path: string;
  origin: '--config' | 'S3FTP_CONFIG';
}

export interface LoadedConfig {
  config: Config;
  /** The config file read, if any. */
  file?: string;
  /** Settings in the config file that the configuration never read (a typo, or not used by it). */
  unused: string[];
}

/**
 * Reads a config file: one JSON object whose keys are the environment variable
 * names, e.g. `{ "FTP_PORT": 2121, "S3_BUCKET": "files" }`. Values are strings,
 * numbers or booleans; FTP_USERS_JSON may also be the users object itself.
 * Throws ConfigError naming the file and the key at fault.
 */
export function readConfigFile(source: ConfigSource): Env {
  const where = `${source.origin}: ${source.path}`;
  let text: string;
  try {
    text = readFileSync(source.path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${where}: cannot read: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseSecretJson(text);
  } catch (err) {
    throw new ConfigError(`${where}: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new ConfigError(`${where}: expected a JSON object of settings, e.g. { "FTP_PORT": 2121 }`);
  }
  const settings: Env = {};
  for (const [key, value] of Object.entries(doc)) {
    if (!SETTING_NAME.test(key)) {
      throw new ConfigError(`${where}: "${key}" is not a setting name (use the variable names, e.g. FTP_PORT)`);
    }
    if (key === 'S3FTP_CONFIG') throw new ConfigError(`${where}: S3FTP_CONFIG cannot be set in a config file`);
    let text: string;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number' || typeof value === 'boolean') text = String(value);
    else if (key === 'FTP_USERS_JSON' && typeof value === 'object' && value !== null) text = JSON.stringify(value);
    else throw new ConfigError(`${where}: ${key} must be a string, a number or a boolean`);
    settings[key] = isPathSetting(key) && text.trim() !== '' && !isAbsolute(text.trim())
      ? resolve(dirname(resolve(source.path)), text.trim())
      : text;
  }
  return settings;
}

/** The config file named by `--config`, else by S3FTP_CONFIG, else none. */
export function configSource(env: Env, flag: string | undefined): ConfigSource | undefined {
  if (flag !== undefined) return { path: flag, origin: '--config' };
  const path = env.S3FTP_CONFIG?.trim();
  return path ? { path, origin: 'S3FTP_CONFIG' } : undefined;
}

/**
 * The configuration from the config file (when one is named) under the
 * environment: a variable set to a non-empty value wins over the file. A bad
 * value that came from the file is reported with the file's name. With
 * `strict`, a file setting this configuration never reads (a misspelt key,
 * or one that has no effect here) is a ConfigError naming it; without, it is
 * only returned in `unused`.
 */
export function loadConfigWithFile(env: Env, source: ConfigSource | undefined, options: { strict?: boolean } = {}): LoadedConfig {
  const fromFile = source ? readConfigFile(source) : {};
  const settings: Env = { ...fromFile };
  const fileKeys = new Set(Object.keys(fromFile));
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && value.trim() !== '') {
      settings[key] = value;
      fileKeys.delete(key);
    }
  }
  // Record what the configuration reads, to report file settings nothing read.
  const read = new Set<string>();
  const recorded = new Proxy(settings, {
    get(target, key) {
      if (typeof key === 'string') read.add(key);
      return Reflect.get(target, key) as unknown;
    },
  });
  let config: Config;
  try {
    config = loadConfig(recorded);
  } catch (err) {
    if (!(err instanceof ConfigError) || !source) throw err;
    const key = /^([A-Z][A-Z0-9_]*):/.exec(err.message)?.[1];
    if (key && fileKeys.has(key)) throw new ConfigError(`${err.message} (set in ${source.path})`);
    throw err;
  }
  const unused = [...Object.keys(fromFile)].filter((key) => !read.has(key));
  if (options.strict && source && unused.length > 0) throw new ConfigError(unusedSettingsMessage(unused, source.path));
  return { config, file: source?.path, unused };
}

/** The error for config-file settings nothing read: each key, and where it was set. */
export function unusedSettingsMessage(unused: readonly string[], file: string): string {
  const keys = unused.map((k) => `"${k}"`).join(', ');
  return `${keys} in ${file} ${unused.length === 1 ? 'is' : 'are'} not used by this configuration (misspelt, or no effect with these settings)`;
}
