/** A directory seen to exist, and, when one listing page held all of it, the names of its subdirectories. */
export interface KnownDirectory {
  readonly subdirectories?: ReadonlySet<string>;
}

/**
 * Directories this process saw a moment ago, so that a run of STORs into
 * one directory asks S3 about it once, not once per file: whether it exists,
 * and whether a name in it is a subdirectory. Kept for `ttlMs` at most;
 * every directory made, removed or renamed and every file deleted through
 * the same storage forgets everything. So the only staleness is what
 * another process did in the last `ttlMs`: a STOR into a directory it
 * removed succeeds and brings the directory back, and one onto a name it
 * just made a directory stores a file beside it, as any S3 writer could.
 */
export class KnownDirectories {
  readonly #known = new Map<string, { until: number; directory: KnownDirectory }>();

  constructor(
    private readonly ttlMs: number,
    private readonly max = 4096,
  ) {}

  get(prefix: string): KnownDirectory | undefined {
    const known = this.#known.get(prefix);
    if (known === undefined) return undefined;
    if (known.until > performance.now()) return known.directory;
    this.#known.delete(prefix);
    return undefined;
  }

  add(prefix: string, directory: KnownDirectory = {}): KnownDirectory {
    if (this.ttlMs <= 0) return directory;
    this.#known.delete(prefix);
    // The oldest entry goes first: a Map iterates in insertion order.
    if (this.#known.size >= this.max) this.#known.delete(this.#known.keys().next().value as string);
    this.#known.set(prefix, { until: performance.now() + this.ttlMs, directory });
    return directory;
  }

  forget(): void {
    this.#known.clear();
  }
}
