/**
 * Directories this process saw exist a moment ago, so that a run of STORs
 * into one directory asks S3 about it once, not once per file. Only "it
 * exists" is remembered, for `ttlMs` at most; every removal or rename made
 * through the same storage forgets everything. So the only staleness is a
 * directory that another process removed in the last `ttlMs`: a STOR into it
 * then succeeds and brings it back, as any S3 writer could.
 */
export class KnownDirectories {
  readonly #until = new Map<string, number>();

  constructor(
    private readonly ttlMs: number,
    private readonly max = 4096,
  ) {}

  has(prefix: string): boolean {
    const until = this.#until.get(prefix);
    if (until === undefined) return false;
    if (until > performance.now()) return true;
    this.#until.delete(prefix);
    return false;
  }

  add(prefix: string): void {
    if (this.ttlMs <= 0) return;
    this.#until.delete(prefix);
    // The oldest entry goes first: a Map iterates in insertion order.
    if (this.#until.size >= this.max) this.#until.delete(this.#until.keys().next().value as string);
    this.#until.set(prefix, performance.now() + this.ttlMs);
  }

  forget(): void {
    this.#until.clear();
  }
}
