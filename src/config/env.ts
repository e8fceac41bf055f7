/** A configuration error: one message that names the setting at fault. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The environment (or a config file's settings), as the loaders read it. */
export type Env = Record<string, string | undefined>;

/** A whole number setting within [min, max]; `fallback` when unset. */
export function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}: "${raw}" is not a whole number`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name}: ${value} is outside ${min}-${max}`);
  }
  return value;
}
