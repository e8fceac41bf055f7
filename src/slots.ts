/**
 * At most `size` holders at once; the others wait in line here, first come
 * first served, for as long as their signal allows. For work whose next
 * layer queues worse: libuv's thread pool (which a process must drain before
 * it exits), or an HTTP agent, where time in its queue counts against a
 * request's timeouts.
 */
export class Slots {
  #free: number;
  readonly #line: Array<() => void> = [];

  constructor(size: number) {
    this.#free = size;
  }

  /** Runs `work` in a slot, once one is free; a `signal` that aborts first takes the caller out of line. */
  async run<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#take(signal);
    try {
      return await work();
    } finally {
      // The slot passes to the next in line, or is given back.
      const next = this.#line.shift();
      if (next) next();
      else this.#free++;
    }
  }

  #take(signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const turn = (): void => {
        signal?.removeEventListener('abort', leave);
        resolve();
      };
      const leave = (): void => {
        const at = this.#line.indexOf(turn);
        if (at >= 0) this.#line.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', leave, { once: true });
      this.#line.push(turn);
    });
  }
}
