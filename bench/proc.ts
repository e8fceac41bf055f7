import { readFileSync, readdirSync, writeFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux we run on). */
const TICKS = 100;
const MiB = 1024;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // the process is gone
  }
}

/**
 * CPU seconds (utime + stime) a process has used; with `children`, plus
 * those of the children it has waited for (cutime + cstime), which is how a
 * forking server such as vsftpd accounts for its sessions.
 */
export function cpuSeconds(pid: number, children = true): number {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return 0;
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [utime, stime, cutime, cstime] = [11, 12, 13, 14].map((i) => Number(fields[i]));
  return (utime! + stime! + (children ? cutime! + cstime! : 0)) / TICKS;
}

function statusField(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const kib = new RegExp(`${field}:\\s+(\\d+) kB`).exec(read(`/proc/${pid}/status`) ?? '')?.[1];
  return Number(kib ?? 0) / MiB;
}

/** The process's peak resident memory (VmHWM, MiB) since it started or since resetPeak. */
export function peakRss(pid: number): number {
  return statusField(pid, 'VmHWM');
}

/** Resident memory now (VmRSS, MiB). */
export function rss(pid: number): number {
  return statusField(pid, 'VmRSS');
}

/** Resets VmHWM to the current RSS (`5` to /proc/<pid>/clear_refs); false when not allowed. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** The process and all its descendants. */
export function processTree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    for (const task of safeList(`/proc/${all[i]}/task`)) {
      const children = read(`/proc/${all[i]}/task/${task}/children`)?.trim();
      if (children) all.push(...children.split(' ').map(Number));
    }
  }
  return all;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Samples the summed RSS of a process tree every `intervalMs` (a forking
 * server's sessions are other processes, so VmHWM of the listener alone says
 * nothing about them) and keeps the peak since the last reset.
 */
export class TreeRssSampler {
  #peak = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pid: number, intervalMs = 20) {
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.#timer.unref();
  }

  sample(): number {
    const total = processTree(this.pid).reduce((sum, pid) => sum + rss(pid), 0);
    this.#peak = Math.max(this.#peak, total);
    return total;
  }

  /** The peak since the last reset, never below the main process's own VmHWM. */
  peak(): number {
    this.sample();
    return Math.max(this.#peak, peakRss(this.pid));
  }

  reset(): void {
    resetPeak(this.pid);
    this.#peak = 0;
    this.sample();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
