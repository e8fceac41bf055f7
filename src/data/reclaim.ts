import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Streamed bytes arrive in fresh 64 KiB buffers whose memory lives outside
 * V8's heap. V8 collects them only once about 64 MiB of such memory has
 * piled up, which alone would take a third of the server's memory budget.
 * A young-generation collection every few MiB of transferred data frees them
 * for well under a millisecond each, keeping resident memory flat however
 * big or many the transfers are.
 */
const EVERY_BYTES = 8 * 1024 * 1024;

type Gc = (options: { type: 'minor'; execution: 'sync' }) => void;

function exposeGc(): Gc | undefined {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as Gc;
  } catch {
    return undefined; // without it, V8's own schedule applies
  }
}

const gc = exposeGc();
let since = 0;

/** Counts bytes streamed through the server; every few MiB, frees the buffers they came in. */
export function streamed(bytes: number): void {
  since += bytes;
  if (since < EVERY_BYTES || !gc) return;
  since = 0;
  gc({ type: 'minor', execution: 'sync' });
}
