/** What happened; `upload` is always sent when events are on, the others when listed in EVENTS_KINDS. */
export const EVENT_KINDS = ['upload', 'delete', 'rename', 'mkdir', 'rmdir'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/**
 * The JSON body POSTed to EVENTS_URL. Fields marked optional are absent
 * (never null) when the server does not know them:
 * - bucket, key, etag: absent on the local-directory driver (key is the
 *   storage path there only when the caller sets it);
 * - size, sha256, etag: only on `upload`; sha256 only when the server hashed
 *   the whole object as it arrived (a STOR from offset 0, not APPE or REST);
 * - from: only on `rename` (the old FTP path; `path` is the new one);
 * - partial: only on an `upload` the client did not finish, whose received
 *   bytes keepPartialUploads published in place of the file.
 */
export interface FileEvent {
  /** Unique per event and kept across retries, so a receiver can drop duplicates (delivery is at-least-once). */
  id: string;
  kind: EventKind;
  user: string;
  clientAddress: string;
  /** The FTP path as the user sees it (inside their home). */
  path: string;
  from?: string;
  bucket?: string;
  key?: string;
  size?: number;
  sha256?: string;
  etag?: string;
  partial?: true;
  /** ISO 8601 UTC time the operation completed. */
  time: string;
  /** The FTP session id, as in the server's logs. */
  session: string;
}

/** What the caller gives; id and time are filled in. */
export type FileEventInput = Omit<FileEvent, 'id' | 'time'> & { time?: string };

/** Outcomes counted for /metrics (s3ftp_events_total{outcome}). */
export type EventOutcome =
  /** The receiver answered 2xx. */
  | 'delivered'
  /** One more attempt was scheduled after a failure. */
  | 'retried'
  /** Refused at the door: the queue was full (drop-newest). */
  | 'dropped_overflow'
  /** Given up: attempts exhausted, or the receiver answered a 4xx other than 408/429. */
  | 'failed'
  /** Still queued or in flight when close() ran out of grace. */
  | 'dropped_shutdown';

/** How the sink reports its counts; the lead maps this onto a metrics Counter. */
export type EventCounter = (outcome: EventOutcome, count: number) => void;
