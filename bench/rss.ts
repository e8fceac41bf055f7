import { readFileSync } from 'node:fs';
import { peakRss, resetPeak } from './proc.js';

/**
 * Samples a process's resident memory (VmRSS, MiB) from /proc, keeping the
 * peak since the last reset; the kernel's own high-water mark (VmHWM, reset
 * with clear_refs) catches what falls between samples.
 */
export class RssSampler {
  #peak = 0;
  #highWater = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pid: number, intervalMs = 20) {
    this.#timer = setInterval(() => this.#sample(), intervalMs);
    this.#timer.unref();
  }

  /** The resident memory now. */
  now(): number {
    return this.#sample();
  }

  /** The peak since the last reset (or the start). */
  peak(): number {
    this.#sample();
    this.#peak = Math.max(this.#peak, peakRss(this.pid));
    this.#highWater = Math.max(this.#highWater, this.#peak);
    return this.#peak;
  }

  /** The peak over the whole run. */
  highWater(): number {
    this.#sample();
    return this.#highWater;
  }

  reset(): void {
    resetPeak(this.pid);
    this.#peak = 0;
    this.#sample();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #sample(): number {
    let mib = 0;
    try {
      const kib = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'))?.[1];
      mib = Number(kib ?? 0) / 1024;
    } catch {
      return 0; // the process is gone
    }
    this.#peak = Math.max(this.#peak, mib);
    this.#highWater = Math.max(this.#highWater, mib);
    return mib;
  }
}
