/**
 * Streamed bytes arrive in fresh 64 KiB buffers whose memory lives outside
 * V8's heap. V8 frees them only once about 64 MiB of such memory has piled
 * up: a third of the server's memory budget, and, as glibc hands those pages
 * back and faults them in again, much of a transfer's CPU. A
 * young-generation collection every 2 MiB of transferred data frees them
 * for well under a millisecond each, keeping resident memory flat however
 * big or many the transfers are. Every 8 MiB was too seldom: buffers then
 * outlived two young collections, were promoted, and were freed only by
 * full collections, dozens per GiB (BENCHMARKS.md).
 *
 * It needs node's `--expose-gc`, which the bin, `npm start` and the image
 * pass; run without it, V8's own schedule applies.
 */
const EVERY_BYTES = 2 * 1024 * 1024;

const gc = (globalThis as { gc?: (options: { type: 'minor'; execution: 'sync' }) => void }).gc;
let since = 0;

/** Counts bytes streamed through the server; every few MiB, frees the buffers they came in. */
export function streamed(bytes: number): void {
  if (!gc) return;
  since += bytes;
  if (since < EVERY_BYTES) return;
  since = 0;
  gc({ type: 'minor', execution: 'sync' });
}
