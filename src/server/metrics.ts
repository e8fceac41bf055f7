/**
 * A small Prometheus registry: counters, gauges and fixed-bucket histograms,
 * rendered in the text exposition format (version 0.0.4). About a hundred
 * lines instead of prom-client, so the image carries no extra runtime
 * dependency and no default collectors we would not read.
 */

type Labels = Record<string, string | number>;

interface Metric {
  render(): string[];
}

/** Label values escaped as the exposition format asks (backslash, quote, newline). */
function escapeLabel(value: string | number): string {
  return String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(names: readonly string[], values: readonly (string | number)[], extra = ''): string {
  const parts = names.map((name, i) => `${name}="${escapeLabel(values[i] ?? '')}"`);
  if (extra) parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

/** One value per label set; the key is the label values joined by a NUL (which no label value holds). */
abstract class Family<T> implements Metric {
  protected readonly series = new Map<string, { values: (string | number)[]; data: T }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
    readonly labelNames: readonly string[],
  ) {}

  protected get(labels: Labels | undefined, init: () => T): T {
    const values = this.labelNames.map((name) => labels?.[name] ?? '');
    const key = values.join('\0');
    let entry = this.series.get(key);
    if (!entry) {
      entry = { values, data: init() };
      this.series.set(key, entry);
    }
    return entry.data;
  }

  render(): string[] {
    const help = this.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
    return [`# HELP ${this.name} ${help}`, `# TYPE ${this.name} ${this.type}`, ...this.samples()];
  }

  protected abstract samples(): string[];
}

/** A value that only goes up. */
export class Counter extends Family<{ value: number }> {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, 'counter', labelNames);
    // A series without labels exists from the start, so it reads 0 rather than missing.
    if (labelNames.length === 0) this.get(undefined, () => ({ value: 0 }));
  }

  inc(labels?: Labels, by = 1): void {
    this.get(labels, () => ({ value: 0 })).value += by;
  }

  /** The current value for a label set (0 when never incremented). */
  value(labels?: Labels): number {
    return this.get(labels, () => ({ value: 0 })).value;
  }

  protected samples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${labelText(this.labelNames, s.values)} ${s.data.value}`);
  }
}

/** A value that goes up and down, or is read when rendered. */
export class Gauge extends Family<{ value: number }> {
  constructor(
    name: string,
    help: string,
    private readonly collect?: () => number,
  ) {
    super(name, help, 'gauge', []);
    this.get(undefined, () => ({ value: 0 }));
  }

  inc(by = 1): void {
    this.get(undefined, () => ({ value: 0 })).value += by;
  }

  dec(by = 1): void {
    this.inc(-by);
  }

  value(): number {
    return this.collect ? this.collect() : this.get(undefined, () => ({ value: 0 })).value;
  }

  protected samples(): string[] {
    return [`${this.name} ${this.value()}`];
  }
}

/** Observations counted into fixed cumulative buckets, with their sum and count. */
export class Histogram extends Family<{ counts: number[]; sum: number; count: number }> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly buckets: readonly number[],
  ) {
    super(name, help, 'histogram', labelNames);
  }

  observe(labels: Labels | undefined, value: number): void {
    const data = this.get(labels, () => ({ counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    // Each bucket counts the observations at or below its bound (le = "less or equal").
    this.buckets.forEach((bound, i) => {
      if (value <= bound) data.counts[i]!++;
    });
    data.sum += value;
    data.count++;
  }

  protected samples(): string[] {
    const lines: string[] = [];
    for (const { values, data } of this.series.values()) {
      this.buckets.forEach((bound, i) => {
        lines.push(`${this.name}_bucket${labelText(this.labelNames, values, `le="${bound}"`)} ${data.counts[i]}`);
      });
      lines.push(`${this.name}_bucket${labelText(this.labelNames, values, 'le="+Inf"')} ${data.count}`);
      lines.push(`${this.name}_sum${labelText(this.labelNames, values)} ${data.sum}`);
      lines.push(`${this.name}_count${labelText(this.labelNames, values)} ${data.count}`);
    }
    return lines;
  }
}

/** S3 request latency buckets, in seconds: from a fast HEAD in-region to a slow retried call. */
const S3_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The content type of the text exposition format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Everything s3ftp counts, by name. One instance per process, shared by the
 * sessions through the ServerContext and read by the health endpoint.
 */
export class Metrics {
  readonly sessions = new Gauge('s3ftp_sessions', 'Control connections open now.');
  readonly sessionsTotal = new Counter('s3ftp_sessions_total', 'Control connections accepted.');
  readonly logins = new Counter('s3ftp_logins_total', 'Login attempts by result (ok, failed).', ['result']);
  readonly commands = new Counter('s3ftp_commands_total', 'Commands by verb and reply code.', ['verb', 'code']);
  readonly bytes = new Counter('s3ftp_data_bytes_total', 'Bytes over data connections: in (uploads), out (downloads and listings).', ['direction']);
  readonly transfers = new Counter('s3ftp_transfers_total', 'Data transfers by direction and result (ok, aborted, failed).', ['direction', 'result']);
  readonly s3Latency = new Histogram(
    's3ftp_s3_request_duration_seconds',
    'S3 requests by operation, until the response headers, retries included.',
    ['operation'],
    S3_LATENCY_BUCKETS,
  );
  readonly s3Errors = new Counter('s3ftp_s3_request_errors_total', 'S3 requests that failed after retries, by operation.', ['operation']);

  readonly events = new Counter(
    's3ftp_events_total',
    'File events by outcome (delivered, retried, failed, dropped_overflow, dropped_shutdown).',
    ['outcome'],
  );
  readonly authHook = new Counter(
    's3ftp_auth_provider_total',
    'Identity provider (FTP_AUTH_URL) answers by result (ok, cached, refused, timeout, unavailable, bad-status, malformed).',
    ['result'],
  );

  readonly #started = Date.now() / 1000;
  readonly #process: Metric[] = [
    new Gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds.', () => this.#started),
    new Gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => process.memoryUsage.rss()),
  ];

  /** Records one command; unknown verbs share one label so a client cannot grow the series without bound. */
  command(verb: string | undefined, code: number | undefined): void {
    this.commands.inc({ verb: verb ?? 'unknown', code: code ?? 'none' });
  }

  /** Records one finished transfer and its bytes. */
  transfer(direction: 'upload' | 'download' | 'list', result: string, bytes: number): void {
    this.transfers.inc({ direction, result });
    this.bytes.inc({ direction: direction === 'upload' ? 'in' : 'out' }, bytes);
  }

  /** Records one S3 request (the storage driver calls this from its client middleware). */
  s3Request(operation: string, seconds: number, ok: boolean): void {
    this.s3Latency.observe({ operation }, seconds);
    if (!ok) this.s3Errors.inc({ operation });
  }

  /** The whole registry in the Prometheus text format. */
  render(): string {
    const metrics: Metric[] = [
      this.sessions,
      this.sessionsTotal,
      this.logins,
      this.commands,
      this.bytes,
      this.transfers,
      this.s3Latency,
      this.s3Errors,
      this.events,
      this.authHook,
      ...this.#process,
    ];
    return `${metrics.flatMap((m) => m.render()).join('\n')}\n`;
  }
}
