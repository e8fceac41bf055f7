/**
 * Writes running in this process, by the key or path they write. A
 * directory with one running into it is not empty (`under`), as on a disk,
 * where the file being written is already there: RMD answers 550 for it.
 */
export class RunningWrites {
  readonly #running = new Map<string, number>();

  /** Marks a write to `name` as running; call the result once it has ended (more calls do nothing). */
  start(name: string): () => void {
    this.#running.set(name, (this.#running.get(name) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#running.get(name) ?? 1) - 1;
      if (left > 0) this.#running.set(name, left);
      else this.#running.delete(name);
    };
  }

  /** Whether a write to a name starting with `prefix` is running. */
  under(prefix: string): boolean {
    for (const name of this.#running.keys()) if (name.startsWith(prefix)) return true;
    return false;
  }
}
