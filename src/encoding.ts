/**
 * Names on the control connection are UTF-8 (RFC 2640). Bytes that are not
 * valid UTF-8 are never turned into U+FFFD (which made `café` and `cafè` one
 * name): the line reader keeps each such byte as a lone surrogate
 * U+DC80–U+DCFF (Python's "surrogateescape"), so the path function can
 * refuse the name (553) or, with FTP_LEGACY_ENCODING, decode the original
 * bytes from the client's 8-bit code page. Inside the server names are
 * always proper UTF-16 strings; only the edges convert.
 */

/** The 8-bit code pages FTP_LEGACY_ENCODING takes. */
export const LEGACY_ENCODINGS = ['latin1', 'cp1252', 'cp437'] as const;
export type LegacyEncoding = (typeof LEGACY_ENCODINGS)[number];

const ESCAPE_BASE = 0xdc00;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes a command line: valid UTF-8 as such, every other byte as an escape (see above). */
export function decodeLine(bytes: Buffer): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    return decodeEscaped(bytes);
  }
}

function decodeEscaped(bytes: Buffer): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n > 0) {
      out += bytes.toString('utf8', i, i + n);
      i += n;
    } else {
      out += String.fromCharCode(ESCAPE_BASE + bytes[i]!);
      i++;
    }
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at i (RFC 3629 table), or 0. */
function validSequenceLength(b: Buffer, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/** True when the text holds bytes that were not valid UTF-8 (escapes from decodeLine). */
export function hasInvalidBytes(text: string): boolean {
  return /(?<![\ud800-\udbff])[\udc80-\udcff]/.test(text);
}

/** The bytes the client sent for an escaped string. */
function originalBytes(text: string): Buffer {
  const parts: Buffer[] = [];
  let run = '';
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    const paired = i > 0 && text.charCodeAt(i - 1) >= 0xd800 && text.charCodeAt(i - 1) <= 0xdbff;
    if (unit >= 0xdc80 && unit <= 0xdcff && !paired) {
      parts.push(Buffer.from(run, 'utf8'), Buffer.from([unit - ESCAPE_BASE]));
      run = '';
    } else {
      run += text[i];
    }
  }
  parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/** CP437's characters for bytes 0x80–0xFF (the IBM PC set, DOS and Windows console clients). */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/**
 * Windows-1252's characters for bytes 0x80–0x9F (the rest is ISO-8859-1);
 * the five it leaves undefined map to the C1 control of the same value, as
 * WHATWG does. Spelt out because Node's TextDecoder without full ICU decodes
 * "windows-1252" as ISO-8859-1.
 */
const CP1252_C1 = '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';

/** The 256 characters of a code page, by byte. */
function charTable(encoding: LegacyEncoding): string[] {
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  switch (encoding) {
    case 'latin1':
      // ISO-8859-1 proper: 0x80–0x9F are C1 controls (WHATWG's "latin1" label means windows-1252).
      return Array.from(bytes.toString('latin1'));
    case 'cp1252': {
      const chars = Array.from(bytes.toString('latin1'));
      chars.splice(0x80, 32, ...Array.from(CP1252_C1));
      return chars;
    }
    case 'cp437':
      return [...Array.from(bytes.subarray(0, 128).toString('latin1')), ...Array.from(CP437_HIGH)];
  }
}

interface Codec {
  chars: string[];
  bytes: Map<string, number>;
}
const codecs = new Map<LegacyEncoding, Codec>();

function codec(encoding: LegacyEncoding): Codec {
  let c = codecs.get(encoding);
  if (!c) {
    const chars = charTable(encoding);
    if (chars.length !== 256) throw new Error(`${encoding}: table has ${chars.length} characters`);
    const bytes = new Map<string, number>();
    chars.forEach((ch, byte) => bytes.has(ch) || bytes.set(ch, byte));
    c = { chars, bytes };
    codecs.set(encoding, c);
  }
  return c;
}

/**
 * An argument as the client meant it: unchanged when it was valid UTF-8;
 * otherwise its original bytes decoded from `encoding`; undefined when it
 * was not valid UTF-8 and there is no legacy encoding (the caller refuses it).
 */
export function decodeArgument(text: string, encoding: LegacyEncoding | undefined): string | undefined {
  if (!hasInvalidBytes(text)) return text;
  if (!encoding) return undefined;
  const { chars } = codec(encoding);
  let out = '';
  for (const byte of originalBytes(text)) out += chars[byte];
  return out;
}

/** Text in a legacy code page; a character it cannot hold becomes '?'. */
export function encodeLegacy(text: string, encoding: LegacyEncoding): Buffer {
  const { bytes } = codec(encoding);
  const out: number[] = [];
  for (const ch of text) out.push(bytes.get(ch) ?? 0x3f);
  return Buffer.from(out);
}
