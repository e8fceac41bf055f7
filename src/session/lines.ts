import { decodeLine } from '../encoding.js';

/** Telnet bytes (RFC 854) that clients put on the control connection, e.g. around ABOR. */
const IAC = 0xff;
const WILL = 0xfb;
const DONT = 0xfe;
const DM = 0xf2;
/** The lowest Telnet command byte (SE); an IAC before a lower byte is no command. */
const SE = 0xf0;
const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;

/** A line; one too long to keep; or one with a Telnet command inside it, whose text is not what the client typed. */
export type LineEvent = { line: string } | { tooLong: true } | { telnetInside: true };

/**
 * Splits the control connection's bytes into command lines, one at a time:
 * the session asks for the next line only when it is ready to run it, so
 * bytes behind a line stay here unparsed (AUTH TLS drops them). All parsing
 * of raw network bytes happens here:
 * - Telnet IAC sequences before a line are dropped; one inside a line makes
 *   the whole line refused (dropping it would run the command on other text).
 *   IAC IAC, or an IAC before a byte that is no Telnet command, is a 0xFF of the text.
 * - Bytes that are not UTF-8 are kept as escapes for the path function (src/encoding.ts).
 * - CR, LF and CRLF all end a line (Python's ftplib sends ABOR's final LF as
 *   urgent data, which the kernel drops from the stream), except CR NUL, a CR
 *   inside a pathname (RFC 3659 §2.2; seen when both bytes have arrived).
 * - A line longer than `maxBytes` is reported once and discarded without being buffered.
 */
export class LineReader {
  #buf: Buffer;
  #len = 0;
  #overflow = false;
  #telnetInside = false;
  /** Telnet state: 0 normal, 1 after IAC, 2 after IAC WILL/WONT/DO/DONT, 3 after the CR of CR NUL. */
  #telnet = 0;
  /** Chunks received and not yet parsed, and where parsing stands in the first. */
  #chunks: Buffer[] = [];
  #pos = 0;
  #buffered = 0;

  constructor(readonly maxBytes: number) {
    this.#buf = Buffer.alloc(maxBytes);
  }

  /** Bytes fed and not yet parsed: the caller stops reading the socket past its bound. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Hands over received bytes. */
  feed(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /** The next complete line (or overflow) in what was fed, or undefined when more bytes are needed. */
  next(): LineEvent | undefined {
    for (let chunk = this.#chunks[0]; chunk; chunk = this.#chunks[0]) {
      while (this.#pos < chunk.length) {
        this.#buffered--;
        const byte = chunk[this.#pos++]!;
        const event = this.#byte(byte, byte === CR ? this.#peek() : undefined);
        if (event) return event;
      }
      this.#chunks.shift();
      this.#pos = 0;
    }
    return undefined;
  }

  /** Forgets everything received and not yet returned (AUTH TLS: RFC 4217 §4). */
  discard(): void {
    this.#chunks = [];
    this.#pos = 0;
    this.#buffered = 0;
    this.#len = 0;
    this.#overflow = false;
    this.#telnetInside = false;
    this.#telnet = 0;
  }

  /** The byte after the one just taken, if it has arrived. */
  #peek(): number | undefined {
    const chunk = this.#chunks[0]!;
    return this.#pos < chunk.length ? chunk[this.#pos] : this.#chunks[1]?.[0];
  }

  #byte(byte: number, next: number | undefined): LineEvent | undefined {
    if (this.#telnet === 1) {
      this.#telnet = byte >= WILL && byte <= DONT ? 2 : 0;
      if (byte === IAC) this.#append(byte);
      else if (byte >= SE && this.#len > 0) this.#telnetInside = true;
      if (byte >= SE) return undefined;
      this.#append(IAC);
    } else if (this.#telnet === 2 || this.#telnet === 3) {
      // The option of a negotiation, or the NUL of CR NUL.
      this.#telnet = 0;
      return undefined;
    }
    if (byte === IAC) {
      this.#telnet = 1;
    } else if (byte === CR && next === NUL) {
      this.#append(CR);
      this.#telnet = 3;
    } else if (byte === CR || byte === LF) {
      const event: LineEvent | undefined = this.#overflow
        ? { tooLong: true }
        : this.#telnetInside
          ? { telnetInside: true }
          : this.#len > 0
            ? { line: decodeLine(this.#buf.subarray(this.#start(), this.#len)) }
            : undefined;
      this.#len = 0;
      this.#overflow = false;
      this.#telnetInside = false;
      return event;
    } else {
      this.#append(byte);
    }
    return undefined;
  }

  /**
   * Where the line's text starts. A client interrupting a transfer sends
   * IAC IP, IAC DM, ABOR with the IAC before DM as TCP urgent data (RFC 959
   * §4.1.3), which the kernel takes out of the stream: a lone DM (0xF2, never
   * the start of a valid UTF-8 line before an ASCII verb) is left in front
   * of the verb, and inetutils-ftp's ABOR read as an unknown command.
   */
  #start(): number {
    return this.#len > 1 && this.#buf[0] === DM && this.#buf[1]! < 0x80 ? 1 : 0;
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
