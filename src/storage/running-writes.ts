import { StorageError } from './types.js';

/**
 * Uploads and directory renames running in this process, by the key or
 * path they write and the directory they move. A directory with an upload
 * running into it is not empty (`under`), as on a disk, where the file being
 * written is already there: RMD answers 550 for it. An upload publishes
 * where it was sent, so the two must not overlap: a directory is not moved
 * while an upload runs into it, and no upload starts into a directory being
 * moved (either is Busy, 450). Each checks the other as it registers, in
 * one turn of the event loop, so one of two that start together sees the
 * other.
 */
export class RunningWrites {
  readonly #writes = new Map<string, number>();
  readonly #moves = new Map<string, number>();

  /** Marks a write to `name` as running; call the result once it has ended. Busy while a directory above it moves. */
  start(name: string): () => void {
    for (const moving of this.#moves.keys()) {
      if (name.startsWith(moving)) throw new StorageError('Busy', 'the directory it goes into is being renamed');
    }
    return hold(this.#writes, name);
  }

  /** Marks the directory `prefix` (ending in `/`) as moving; call the result once it has. Busy while a write runs under it. */
  startMove(prefix: string): () => void {
    if (this.under(prefix)) throw new StorageError('Busy', 'an upload into it is running');
    return hold(this.#moves, prefix);
  }

  /** Whether a write to a name starting with `prefix` is running. */
  under(prefix: string): boolean {
    for (const name of this.#writes.keys()) if (name.startsWith(prefix)) return true;
    return false;
  }
}

/** Counts `name` in `held` until the result is called (more calls do nothing). */
function hold(held: Map<string, number>, name: string): () => void {
  held.set(name, (held.get(name) ?? 0) + 1);
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    const left = (held.get(name) ?? 1) - 1;
    if (left > 0) held.set(name, left);
    else held.delete(name);
  };
}
