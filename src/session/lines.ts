/** Telnet bytes (RFC 854) that clients put on the control connection, e.g. around ABOR. */
const IAC = 0xff;
const WILL = 0xfb;
const DONT = 0xfe;
const CR = 0x0d;
const LF = 0x0a;

export type LineEvent = { line: string } | { tooLong: true };

/**
 * Splits the control connection's bytes into command lines. All parsing of raw
 * network bytes happens here: Telnet IAC sequences are dropped, CR, LF and CRLF
 * all end a line (Python's ftplib sends ABOR's final LF as urgent data, which
 * the kernel drops from the stream), and a line longer than `maxBytes` is
 * reported once and discarded without being buffered.
 */
export class LineReader {
  #buf: Buffer;
  #len = 0;
  #overflow = false;
  /** Telnet state: 0 normal, 1 after IAC, 2 after IAC WILL/WONT/DO/DONT. */
  #telnet = 0;

  constructor(readonly maxBytes: number) {
    this.#buf = Buffer.alloc(maxBytes);
  }

  /** Feeds bytes; returns the complete lines (or overflows) they finish. */
  push(chunk: Buffer): LineEvent[] {
    const events: LineEvent[] = [];
    for (const byte of chunk) {
      if (this.#telnet === 1) {
        this.#telnet = byte >= WILL && byte <= DONT ? 2 : 0;
        if (byte === IAC) this.#append(byte);
        continue;
      }
      if (this.#telnet === 2) {
        this.#telnet = 0;
        continue;
      }
      if (byte === IAC) {
        this.#telnet = 1;
      } else if (byte === CR || byte === LF) {
        if (this.#overflow) {
          events.push({ tooLong: true });
        } else if (this.#len > 0) {
          events.push({ line: this.#buf.toString('utf8', 0, this.#len) });
        }
        this.#len = 0;
        this.#overflow = false;
      } else {
        this.#append(byte);
      }
    }
    return events;
  }

  #append(byte: number): void {
    if (this.#len >= this.maxBytes) {
      this.#overflow = true;
      return;
    }
    this.#buf[this.#len++] = byte;
  }
}

/** Splits `VERB arg` into an upper-case verb and its argument (spaces inside kept). */
export function parseCommand(line: string): { verb: string; arg: string } {
  const space = line.indexOf(' ');
  if (space < 0) return { verb: line.toUpperCase(), arg: '' };
  return { verb: line.slice(0, space).toUpperCase(), arg: line.slice(space + 1) };
}
