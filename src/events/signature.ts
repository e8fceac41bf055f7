import { createHmac, timingSafeEqual } from 'node:crypto';

/** Header holding the Unix time (seconds) the request was signed at. */
export const TIMESTAMP_HEADER = 'x-s3ftp-timestamp';
/** Header holding `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. */
export const SIGNATURE_HEADER = 'x-s3ftp-signature';
/** How far a receiver should let the timestamp drift from its clock. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/**
 * The signature headers for one request body. The timestamp is inside the
 * signed string so a captured request cannot be replayed later with a fresh
 * timestamp; receivers refuse timestamps outside their tolerance.
 */
export function signatureHeaders(secret: string, body: string, nowMs = Date.now()): Record<string, string> {
  const timestamp = String(Math.floor(nowMs / 1000));
  return { [TIMESTAMP_HEADER]: timestamp, [SIGNATURE_HEADER]: `sha256=${sign(secret, timestamp, body)}` };
}

function sign(secret: string, timestamp: string, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

/**
 * What a receiver does (exported for tests and as the reference for the
 * README): true when the signature matches the exact body bytes and the
 * timestamp is within `toleranceSeconds` of now. Compares in constant time.
 */
export function verifySignature(
  secret: string,
  body: string | Buffer,
  timestamp: string | undefined,
  signature: string | undefined,
  options: { nowMs?: number; toleranceSeconds?: number } = {},
): boolean {
  if (!timestamp || !signature || !/^\d{1,12}$/.test(timestamp)) return false;
  const now = (options.nowMs ?? Date.now()) / 1000;
  if (Math.abs(now - Number(timestamp)) > (options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return false;
  const expected = Buffer.from(`sha256=${sign(secret, timestamp, body)}`);
  const given = Buffer.from(signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
