import type { LimitsConfig } from '../config/index.js';

export type Admission = 'ok' | 'too-many' | 'too-many-from-address' | 'locked-out';

/**
 * Connection caps and login lockouts, per client address, for the whole
 * server. Memory stays bounded: an address is forgotten once it has no
 * connection, no recent failure and no lockout.
 */
export class AbuseGuard {
  #total = 0;
  #perAddress = new Map<string, number>();
  #failures = new Map<string, number[]>();
  #lockedUntil = new Map<string, number>();

  constructor(readonly limits: LimitsConfig) {}

  /** Decides on a new connection; when 'ok', the caller must call release() once it closes. */
  admit(address: string, now = Date.now()): Admission {
    if (this.isLockedOut(address, now)) return 'locked-out';
    if (this.#total >= this.limits.maxConnections) return 'too-many';
    const current = this.#perAddress.get(address) ?? 0;
    if (current >= this.limits.maxConnectionsPerAddress) return 'too-many-from-address';
    this.#total++;
    this.#perAddress.set(address, current + 1);
    return 'ok';
  }

  release(address: string): void {
    this.#total--;
    const current = (this.#perAddress.get(address) ?? 1) - 1;
    if (current > 0) this.#perAddress.set(address, current);
    else this.#perAddress.delete(address);
  }

  isLockedOut(address: string, now = Date.now()): boolean {
    const until = this.#lockedUntil.get(address);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#lockedUntil.delete(address);
    return false;
  }

  /** Records a failed login: how many this address has had in the window, and whether it is now locked out. */
  loginFailed(address: string, now = Date.now()): { recent: number; lockedOut: boolean } {
    const windowStart = now - this.limits.loginFailureWindowMs;
    const recent = (this.#failures.get(address) ?? []).filter((t) => t > windowStart);
    recent.push(now);
    if (recent.length >= this.limits.maxLoginFailures) {
      this.#failures.delete(address);
      this.#lockedUntil.set(address, now + this.limits.lockoutMs);
      return { recent: recent.length, lockedOut: true };
    }
    this.#failures.set(address, recent);
    this.#prune(windowStart);
    return { recent: recent.length, lockedOut: false };
  }

  #prune(windowStart: number): void {
    // Bounded work: drop stale entries only when the map has grown.
    if (this.#failures.size < 10_000) return;
    for (const [address, times] of this.#failures) {
      if (times.every((t) => t <= windowStart)) this.#failures.delete(address);
    }
  }
}
