import { RunningWrites } from './running-writes.js';

/** A directory seen to exist, and, when one listing page held all of it, the names of its subdirectories. */
export interface KnownDirectory {
  readonly subdirectories?: ReadonlySet<string>;
}

/**
 * Directories this process saw a moment ago, so that a run of STORs into
 * one directory asks S3 about it once, not once per file: whether it exists,
 * and whether a name in it is a subdirectory. One per bucket (`forBucket`),
 * shared by every storage on it, keyed by full key prefix. Kept for `ttlMs`
 * at most; every directory made, removed or renamed and every file deleted
 * through any storage on the bucket forgets everything, and an answer that
 * was asked for before such a change is not kept. So the only staleness is
 * what another process did in the last `ttlMs`: a STOR into a directory it
 * removed succeeds and brings the directory back, and one onto a name it
 * just made a directory stores a file beside it, as any S3 writer could.
 * It also knows the writes running into the bucket (`writes`): RMD and a
 * directory rename must not act under one.
 */
export class KnownDirectories {
  static readonly #buckets = new Map<string, KnownDirectories>();
  /**
   * Keys being written through any storage on the bucket, from before a
   * write checks its parent until it has ended.
   */
  readonly writes = new RunningWrites();

  /** The one instance for a bucket at an endpoint. */
  static forBucket(endpoint: string, bucket: string, ttlMs: number): KnownDirectories {
    const id = `${endpoint}\n${bucket}`;
    let known = KnownDirectories.#buckets.get(id);
    if (!known) KnownDirectories.#buckets.set(id, (known = new KnownDirectories(ttlMs)));
    return known;
  }

  readonly #known = new Map<string, { until: number; directory: KnownDirectory }>();
  /** Bumped by forget(): an answer asked for under an older generation is not kept. */
  #generation = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly max = 1024,
  ) {}

  /** To pass to add() with the answer of a request sent now. */
  get generation(): number {
    return this.#generation;
  }

  get(prefix: string): KnownDirectory | undefined {
    const known = this.#known.get(prefix);
    if (known === undefined) return undefined;
    if (known.until > performance.now()) return known.directory;
    this.#known.delete(prefix);
    return undefined;
  }

  /** Keeps what a request sent under `generation` found, unless something was forgotten since. */
  add(prefix: string, generation: number, directory: KnownDirectory): KnownDirectory {
    if (this.ttlMs <= 0 || generation !== this.#generation) return directory;
    this.#known.delete(prefix);
    // The oldest entry goes first: a Map iterates in insertion order.
    if (this.#known.size >= this.max) this.#known.delete(this.#known.keys().next().value as string);
    this.#known.set(prefix, { until: performance.now() + this.ttlMs, directory });
    return directory;
  }

  forget(): void {
    this.#generation++;
    this.#known.clear();
  }
}
