import { BUCKET_NAME, homeToStoragePath } from '../src/paths.js';

/** The public FTP control port on the load balancer. */
export const PUBLIC_CONTROL_PORT = 21;
/** The control port inside the container (FTP_PORT); unprivileged, so the server needs no root. */
export const CONTAINER_CONTROL_PORT = 2121;
/** Hard quota: listeners per Network Load Balancer (not adjustable). */
export const MAX_NLB_LISTENERS = 50;
/** Hard quota: target groups one ECS service can register with (not adjustable). */
export const MAX_TARGET_GROUPS_PER_SERVICE = 5;
/** Placeholder image; set `image` to the registry URI of a real s3ftp build. */
export const DEFAULT_IMAGE = 'ghcr.io/example/s3ftp:latest';

/** Everything the stack can be told, after defaults and validation. */
export interface InfraSettings {
  /** Container image URI; an ECR URI also gets pull rights for the execution role. */
  image: string;
  /** An existing bucket to serve instead of creating one. */
  bucketName?: string;
  /** Key prefix that is the storage root (S3_PREFIX), normalised like the server does; '' for the whole bucket. */
  prefix: string;
  /** Existing buckets users' mounts may name (S3_EXTRA_BUCKETS); the task role gets the driver's actions on each, whole. */
  extraBuckets: string[];
  /** Versioning on the created bucket. */
  versioning: boolean;
  /** Task slots: one Fargate service of one task each, each with its own passive ports. */
  tasks: number;
  /** Passive ports per task. */
  portsPerTask: number;
  /** First passive port; slot i owns [start + i × portsPerTask, start + (i + 1) × portsPerTask). */
  passivePortStart: number;
  /** PROXY protocol v2 on the control target group (the server must understand it). */
  proxyProtocol: boolean;
  /** Complete ARN of an existing users secret; without it the stack creates one. */
  usersSecretArn?: string;
  /** IPv4 CIDR allowed to reach the FTP ports. */
  clientCidr: string;
}

export class InfraConfigError extends Error {
  override name = 'InfraConfigError';
}

/** The context keys read by settingsFromLookup, each also readable as an S3FTP_* environment variable. */
export const SETTING_KEYS = [
  'image',
  'bucketName',
  'prefix',
  'extraBuckets',
  'versioning',
  'tasks',
  'portsPerTask',
  'passivePortStart',
  'proxyProtocol',
  'usersSecretArn',
  'clientCidr',
] as const;

type SettingKey = (typeof SETTING_KEYS)[number];

/** `portsPerTask` → `S3FTP_PORTS_PER_TASK`. */
export function envName(key: SettingKey): string {
  return `S3FTP_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/**
 * Reads raw settings through `get` (CDK context, then the environment) and
 * returns them validated; throws InfraConfigError naming the setting at fault.
 */
export function settingsFromLookup(get: (key: SettingKey) => unknown): InfraSettings {
  const raw: Partial<Record<SettingKey, string>> = {};
  for (const key of SETTING_KEYS) {
    const value = get(key);
    // Context from cdk.json may be a number or boolean; -c and the environment give strings.
    if (value !== undefined && value !== null && String(value).trim() !== '') raw[key] = String(value).trim();
  }
  return resolveSettings({
    image: raw.image,
    bucketName: raw.bucketName,
    prefix: raw.prefix,
    extraBuckets: raw.extraBuckets === undefined ? undefined : raw.extraBuckets.split(',').map((b) => b.trim()).filter(Boolean),
    versioning: raw.versioning === undefined ? undefined : bool('versioning', raw.versioning),
    tasks: raw.tasks === undefined ? undefined : int('tasks', raw.tasks),
    portsPerTask: raw.portsPerTask === undefined ? undefined : int('portsPerTask', raw.portsPerTask),
    passivePortStart: raw.passivePortStart === undefined ? undefined : int('passivePortStart', raw.passivePortStart),
    proxyProtocol: raw.proxyProtocol === undefined ? undefined : bool('proxyProtocol', raw.proxyProtocol),
    usersSecretArn: raw.usersSecretArn,
    clientCidr: raw.clientCidr,
  });
}

/** Applies the defaults and checks every limit the deployment would otherwise hit at deploy time. */
export function resolveSettings(input: Partial<InfraSettings>): InfraSettings {
  const s: InfraSettings = {
    image: input.image ?? DEFAULT_IMAGE,
    bucketName: input.bucketName,
    prefix: prefix(input.prefix ?? ''),
    extraBuckets: input.extraBuckets ?? [],
    versioning: input.versioning ?? false,
    tasks: input.tasks ?? 2,
    portsPerTask: input.portsPerTask ?? 4,
    passivePortStart: input.passivePortStart ?? 30000,
    proxyProtocol: input.proxyProtocol ?? false,
    usersSecretArn: input.usersSecretArn,
    clientCidr: input.clientCidr ?? '0.0.0.0/0',
  };
  if (!s.image || /\s/.test(s.image)) throw new InfraConfigError(`image: "${s.image}" is not an image URI`);
  if (s.bucketName !== undefined && !BUCKET_NAME.test(s.bucketName)) {
    throw new InfraConfigError(`bucketName: "${s.bucketName}" is not a valid bucket name`);
  }
  for (const name of s.extraBuckets) {
    if (!BUCKET_NAME.test(name)) throw new InfraConfigError(`extraBuckets: "${name}" is not a valid bucket name`);
    if (name === s.bucketName) throw new InfraConfigError(`extraBuckets: "${name}" is the served bucket itself`);
  }
  if (s.bucketName !== undefined && s.versioning) {
    throw new InfraConfigError('versioning: applies only to a bucket this stack creates, not to bucketName');
  }
  wholeNumber('tasks', s.tasks, 1, MAX_NLB_LISTENERS - 1);
  // One of the service's target groups is the control port's; the rest are its passive ports.
  const maxPorts = MAX_TARGET_GROUPS_PER_SERVICE - 1;
  if (Number.isInteger(s.portsPerTask) && s.portsPerTask > maxPorts) {
    throw new InfraConfigError(
      `portsPerTask: ${s.portsPerTask} is more than ${maxPorts}: an ECS service registers with at most ` +
        `${MAX_TARGET_GROUPS_PER_SERVICE} target groups, one of them the control port's; add tasks for more passive ports`,
    );
  }
  wholeNumber('portsPerTask', s.portsPerTask, 1, maxPorts);
  const passive = s.tasks * s.portsPerTask;
  if (1 + passive > MAX_NLB_LISTENERS) {
    throw new InfraConfigError(
      `tasks × portsPerTask: ${s.tasks} × ${s.portsPerTask} = ${passive} passive listeners plus the control listener ` +
        `exceed the ${MAX_NLB_LISTENERS} listeners a Network Load Balancer allows; at most ${MAX_NLB_LISTENERS - 1} passive ports in all`,
    );
  }
  wholeNumber('passivePortStart', s.passivePortStart, 1024, 65535);
  const end = s.passivePortStart + passive - 1;
  if (end > 65535) throw new InfraConfigError(`passivePortStart: the passive range ${s.passivePortStart}-${end} runs past 65535`);
  if (s.passivePortStart <= CONTAINER_CONTROL_PORT && CONTAINER_CONTROL_PORT <= end) {
    throw new InfraConfigError(`passivePortStart: the passive range ${s.passivePortStart}-${end} holds the control port ${CONTAINER_CONTROL_PORT}`);
  }
  // ECS takes only a complete ARN (with the 6-character suffix) for a Secrets Manager secret.
  if (s.usersSecretArn !== undefined && !/^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/.test(s.usersSecretArn)) {
    throw new InfraConfigError(`usersSecretArn: "${s.usersSecretArn}" is not a complete Secrets Manager secret ARN (…:secret:name-AbCdEf)`);
  }
  const cidr = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s.clientCidr);
  if (!cidr || cidr.slice(1, 5).some((octet) => Number(octet) > 255) || Number(cidr[5]) > 32) {
    throw new InfraConfigError(`clientCidr: "${s.clientCidr}" is not an IPv4 CIDR block`);
  }
  return s;
}

/** Passive ports of slot `slot`, inclusive. */
export function slotPorts(s: InfraSettings, slot: number): { first: number; last: number } {
  const first = s.passivePortStart + slot * s.portsPerTask;
  return { first, last: first + s.portsPerTask - 1 };
}

function prefix(value: string): string {
  let normalised: string;
  try {
    // The server's own normalisation, so the IAM resources name exactly the keys it will use.
    normalised = homeToStoragePath(value);
  } catch (err) {
    throw new InfraConfigError(`prefix: ${(err as Error).message}`);
  }
  // IAM reads these as wildcards in ARNs and conditions.
  if (/[*?]/.test(normalised)) throw new InfraConfigError(`prefix: "${value}" holds * or ?, which IAM reads as wildcards`);
  return normalised;
}

function int(key: SettingKey, raw: string): number {
  if (!/^\d+$/.test(raw)) throw new InfraConfigError(`${key}: "${raw}" is not a whole number`);
  return Number(raw);
}

function bool(key: SettingKey, raw: string): boolean {
  const v = raw.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new InfraConfigError(`${key}: "${raw}" is not true or false`);
}

function wholeNumber(key: SettingKey, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InfraConfigError(`${key}: ${value} is outside ${min}-${max}`);
  }
}
