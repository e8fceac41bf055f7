import { isIPv4, isIPv6 } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { ActiveChannel } from '../data/active.js';
import { fromNetworkAscii, toNetworkAscii } from '../data/ascii.js';
import { plainAddress } from '../data/channel.js';
import { openPassive, PassivePortsExhausted } from '../data/passive.js';
import { asStorageError, counter, sendStream, UploadBody } from '../data/streams.js';
import { Throttle } from '../data/throttle.js';
import { MAX_NAME_BYTES, MAX_PATH_BYTES } from '../paths.js';
import { Reply } from '../replies.js';
import { protectionRequired } from './security.js';
import type { ResolvedPath, ServerContext, Session } from '../session/session.js';
import { startTransfer } from '../session/transfer.js';
import { baseName, StorageError } from '../storage/types.js';

/** Lowest port PORT/EPRT may name (RFC 2577: no bounces to privileged services). */
const MIN_ACTIVE_PORT = 1024;

export async function retr(s: Session, arg: string): Promise<void> {
  if (!dataReady(s) || !restAllowed(s)) return;
  const target = s.resolve(arg);
  // Phase 1: validated and opened before the 150 (a driver may start fetching only once read).
  const { stream: source, size: total } = await s.storage.read(target.storage, { start: s.restOffset, signal: s.signal });
  source.on('error', () => {}); // surfaced by sendStream, or moot once the transfer is given up
  startTransfer(s, {
    direction: 'download',
    path: target.ftp,
    total,
    // In ASCII mode the stored size is not what crosses the wire.
    opening: `Opening ${modeName(s)} mode data connection for ${baseName(target.storage)}${s.type === 'I' ? ` (${total} bytes)` : ''}.`,
    run: ({ socket, signal, count }) =>
      sendStream(source, socket, {
        signal,
        count,
        stages: [
          // The cap holds the bytes on the wire, as for uploads: after the ASCII conversion.
          ...(s.type === 'A' ? [toNetworkAscii()] : []),
          ...throttled(s.server.config.bandwidth?.downloadBytesPerSecond, s.user?.downloadKiBps),
        ],
      }),
    release: () => void source.destroy(),
  });
}

export async function stor(s: Session, arg: string): Promise<void> {
  await upload(s, arg, false);
}

export async function appe(s: Session, arg: string): Promise<void> {
  await upload(s, arg, true);
}

async function upload(s: Session, arg: string, append: boolean): Promise<void> {
  if (!dataReady(s) || !restAllowed(s)) return;
  const target = s.resolve(arg);
  const offset = s.restOffset;
  if (offset > 0 && !s.storage.capabilities.resumeUpload) {
    s.reply(Reply.InvalidRestart, 'Resuming uploads is not supported by this storage.');
    return;
  }
  if (offset > 0) s.authorize('append', target);
  // A size limit counts from the bytes the upload keeps: the REST offset, or all of an APPE's file.
  const maxFileSize = s.user?.maxFileSize;
  const kept = maxFileSize === undefined ? 0 : append ? await existingSize(s, target) : offset;
  if (maxFileSize !== undefined && kept > maxFileSize) throw new StorageError('QuotaExceeded', 'file size limit reached');
  // APPE keeps every existing byte; STOR (from 0 or from a REST offset) replaces some.
  const { destination, claim } = append ? { destination: target, claim: undefined } : await storeTarget(s, target);
  // Phase 1 ends when the storage has validated the target (parent, name,
  // offset) and asks for the first byte: a refusal is answered with no 150.
  const controller = new AbortController();
  const body = new UploadBody();
  const whole = !append && offset === 0;
  /** Why the commit rule refused the upload: the data connection's fault (426), not the storage's. */
  let refused: unknown;
  const written = s.storage.write(destination.storage, body, {
    offset: append ? undefined : offset,
    append,
    createOnly: claim !== undefined,
    signal: AbortSignal.any([controller.signal, s.signal]),
    metadata: { 'uploaded-by': s.user?.name ?? '', 'client-address': s.clientAddress },
    onAbort: s.user?.keepPartialUploads ? 'publish' : 'discard',
    // What was received replaced the file: a receiver told of the earlier version must hear of it.
    onPartial: (size) => s.server.events?.emit({ ...uploadEvent(s, destination), size, partial: true }),
    beforePublish: () =>
      body.committed().catch((err: unknown) => {
        refused ??= err;
        throw err;
      }),
    // For the upload event, which carries it for a STOR from byte 0 only; the storage hashes what it stores, once.
    sha256: s.server.events !== undefined && whole,
  });
  written.catch(() => {}).finally(() => claim?.release()); // awaited below or by the transfer; a refusal is thrown from here
  await Promise.race([body.opened, written]);
  startTransfer(s, {
    direction: 'upload',
    path: destination.ftp,
    opening: 'Ok to send data.',
    ...(destination !== target ? { completed: `Transfer complete; stored as "${baseName(destination.storage)}".` } : {}),
    controller,
    async run({ socket, signal, count, commit }) {
      body.commit = commit;
      const stages = [
        ...throttled(s.server.config.bandwidth?.uploadBytesPerSecond, s.user?.uploadKiBps),
        ...(s.type === 'A' ? [fromNetworkAscii()] : []),
        // After the TYPE A conversion: the limit is on the bytes stored, not those sent.
        ...(maxFileSize !== undefined ? [counter(() => {}, maxFileSize - kept)] : []),
      ];
      // Whichever side fails first explains the failure: the data connection (426) or the storage (451/55x).
      // A storage that gives up stops reading its body, and the pipeline reports that as an abort or
      // a premature close with no abort of the transfer: then the storage's error, from `stored`, tells.
      let firstError: unknown;
      const received = pipeline(socket, counter(count), ...stages, body, { signal }).catch((err: unknown) => {
        const e = err as { code?: string; name?: string };
        const readerLeft = e.name === 'AbortError' || e.code === 'ERR_STREAM_PREMATURE_CLOSE';
        if (!readerLeft || signal.aborted) firstError ??= err;
        throw err;
      });
      const stored = written.catch((err: unknown) => {
        firstError ??= refused ?? asStorageError(err);
        socket.destroy();
        throw err;
      });
      const results = await Promise.allSettled([received, stored]);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw firstError ?? failed.reason;
      // Stored and confirmed by the storage: the event may go (emit only queues, never waits or throws).
      const { size, sha256 } = await written;
      s.server.events?.emit({ ...uploadEvent(s, destination), size, sha256: whole ? sha256 : undefined });
    },
    async release() {
      // Nothing was sent, or the transfer failed: the write must end (discarded) before the final reply.
      body.destroy();
      await written.catch(() => undefined);
    },
  });
}

/** An upload event's fields but its size and hash. */
function uploadEvent(s: Session, destination: ResolvedPath) {
  return { kind: 'upload' as const, user: s.user?.name ?? '', clientAddress: s.clientAddress, path: destination.ftp, ...s.locate(destination.storage), session: s.id };
}

/** The slower of the server's cap and the user's, if either is set (a Throttle stage, or none). */
function throttled(serverBytesPerSecond: number | undefined, userKiBps: number | undefined): Throttle[] {
  const limits = [serverBytesPerSecond, userKiBps === undefined ? undefined : userKiBps * 1024].filter((x) => x !== undefined);
  return limits.length > 0 ? [new Throttle(Math.min(...limits))] : [];
}

/** The size of the file an APPE extends (0 if there is none yet). */
async function existingSize(s: Session, target: ResolvedPath): Promise<number> {
  try {
    return (await s.storage.stat(target.storage, s.signal)).size;
  } catch (err) {
    if (err instanceof StorageError && err.code === 'NotFound') return 0;
    throw err;
  }
}

export function rest(s: Session, arg: string): void {
  const text = arg.trim();
  const offset = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(offset)) {
    s.reply(Reply.SyntaxErrorInArguments, 'REST needs a byte offset.');
    return;
  }
  s.restOffset = offset;
  s.reply(Reply.PendingFurtherInfo, `Restart position accepted (${offset}).`);
}

export async function abor(s: Session): Promise<void> {
  const transfer = s.transfer;
  if (!transfer) {
    s.setDataChannel(undefined);
    s.reply(Reply.NoTransferToAbort, 'No transfer to abort.');
    return;
  }
  transfer.abort();
  await transfer.done;
  // A channel set up before it (PASV, then HASH) goes too, as it does when nothing runs.
  s.setDataChannel(undefined);
  s.reply(Reply.TransferComplete, 'Abort successful.');
}

export function type(s: Session, arg: string): void {
  const words = arg.trim().toUpperCase().split(/\s+/);
  const [code, param] = words;
  if (words.length > 2 || !code) {
    s.reply(Reply.SyntaxErrorInArguments, 'Unrecognised TYPE command.');
  } else if (code === 'A' && (param === undefined || param === 'N')) {
    s.type = 'A';
    s.reply(Reply.CommandOkay, 'Switching to ASCII mode.');
  } else if ((code === 'I' && param === undefined) || (code === 'L' && param === '8')) {
    s.type = 'I';
    s.reply(Reply.CommandOkay, 'Switching to Binary mode.');
  } else if (['A', 'E', 'I', 'L'].includes(code)) {
    s.reply(Reply.ParameterNotImplemented, `TYPE ${arg.trim()} not implemented.`);
  } else {
    s.reply(Reply.SyntaxErrorInArguments, 'Unrecognised TYPE command.');
  }
}

export function mode(s: Session, arg: string): void {
  oneOption(s, arg, 'S', ['B', 'C'], 'MODE');
}

export function stru(s: Session, arg: string): void {
  oneOption(s, arg, 'F', ['R', 'P'], 'STRU');
}

function oneOption(s: Session, arg: string, supported: string, known: string[], verb: string): void {
  const value = arg.trim().toUpperCase();
  if (value === supported) s.reply(Reply.CommandOkay, `${verb} set to ${supported}.`);
  else if (known.includes(value)) s.reply(Reply.ParameterNotImplemented, `${verb} ${value} not implemented.`);
  else s.reply(Reply.SyntaxErrorInArguments, `Unrecognised ${verb} command.`);
}

export async function pasv(s: Session): Promise<void> {
  if (s.epsvAll) {
    s.reply(Reply.SyntaxErrorInArguments, 'EPSV ALL is in effect; use EPSV.');
    return;
  }
  const local = plainAddress(s.socket.localAddress);
  const advertised = s.server.config.pasvAddress ?? local;
  if (!isIPv4(advertised)) {
    s.reply(Reply.SyntaxErrorInArguments, 'PASV needs IPv4; use EPSV.');
    return;
  }
  const port = await listenPassive(s);
  if (port === undefined) return;
  s.reply(Reply.EnteringPassive, `Entering Passive Mode (${advertised.replace(/\./g, ',')},${port >> 8},${port & 255}).`);
}

export async function epsv(s: Session, arg: string): Promise<void> {
  const param = arg.trim().toUpperCase();
  if (param === 'ALL') {
    s.epsvAll = true;
    s.reply(Reply.CommandOkay, 'EPSV ALL ok.');
    return;
  }
  // The client connects to the address it reached us at, so of its own family (behind a PROXY-protocol
  // balancer, the one the balancer reports).
  const family = isIPv4(plainAddress(s.clientAddress)) ? '1' : '2';
  if (param !== '' && param !== family) {
    s.reply(Reply.NetworkProtocolNotSupported, `Network protocol not supported, use (${family}).`);
    return;
  }
  const port = await listenPassive(s);
  if (port === undefined) return;
  s.reply(Reply.EnteringExtendedPassive, `Entering Extended Passive Mode (|||${port}|).`);
}

async function listenPassive(s: Session): Promise<number | undefined> {
  s.setDataChannel(undefined);
  try {
    const { port, channel } = await openPassive({
      host: s.socket.localAddress ?? '127.0.0.1',
      range: s.server.config.pasvPorts,
      clientAddress: s.clientAddress,
      timeoutMs: s.server.config.dataTimeoutMs,
      log: s.log,
    });
    s.setDataChannel(channel);
    return port;
  } catch (err) {
    if (!(err instanceof PassivePortsExhausted)) throw err;
    s.log.warn({ err }, 'passive ports exhausted');
    s.reply(Reply.CantOpenDataConnection, 'No passive port available, try again later.');
    return undefined;
  }
}

export function port(s: Session, arg: string): void {
  const parts = arg.trim().split(',');
  const nums = parts.map((p) => (/^\d{1,3}$/.test(p.trim()) ? Number(p) : NaN));
  if (nums.length !== 6 || nums.some((n) => !(n >= 0 && n <= 255))) {
    s.reply(Reply.SyntaxErrorInArguments, 'Illegal PORT command.');
    return;
  }
  active(s, nums.slice(0, 4).join('.'), nums[4]! * 256 + nums[5]!, 'PORT');
}

export function eprt(s: Session, arg: string): void {
  const text = arg.trim();
  const delim = text[0];
  const fields = delim ? text.split(delim) : [];
  // |af|address|port| splits into ['', af, address, port, ''].
  const [, af, address, portText] = fields;
  if (fields.length !== 5 || !address || !/^\d{1,5}$/.test(portText ?? '')) {
    s.reply(Reply.SyntaxErrorInArguments, 'Illegal EPRT command.');
    return;
  }
  if (af !== '1' && af !== '2') {
    s.reply(Reply.NetworkProtocolNotSupported, 'Network protocol not supported, use (1,2).');
    return;
  }
  if (!(af === '1' ? isIPv4(address) : isIPv6(address))) {
    s.reply(Reply.SyntaxErrorInArguments, 'Illegal EPRT command: the address is not of that family.');
    return;
  }
  active(s, address, Number(portText), 'EPRT');
}

function active(s: Session, host: string, port: number, verb: string): void {
  if (s.epsvAll) {
    s.reply(Reply.SyntaxErrorInArguments, 'EPSV ALL is in effect; use EPSV.');
    return;
  }
  // RFC 2577: data may only go back to the client itself, and never to a privileged port.
  if (plainAddress(host) !== s.clientAddress || port < MIN_ACTIVE_PORT || port > 65535) {
    s.log.warn({ event: 'port-refused', host, port });
    s.reply(Reply.ParameterNotImplemented, `${verb} refused: only your own address and ports >= ${MIN_ACTIVE_PORT}.`);
    return;
  }
  s.setDataChannel(
    new ActiveChannel({
      // The address checked, in the form the control connection has (EPRT |2| may name an IPv4 client as ::ffff:a.b.c.d).
      host: s.clientAddress,
      port,
      localAddress: plainAddress(s.socket.localAddress),
      timeoutMs: s.server.config.dataTimeoutMs,
    }),
  );
  s.reply(Reply.CommandOkay, `${verb} command successful. Consider using PASV.`);
}

/** True when a data channel is prepared; otherwise answers 425 (or 521 without PROT P). */
export function dataReady(s: Session): boolean {
  if (!s.protectData && protectionRequired(s)) {
    s.reply(Reply.DataProtectionRequired, 'Data connections must be encrypted: use PBSZ 0 and PROT P.');
    return false;
  }
  if (s.data?.claim()) return true;
  s.setDataChannel(undefined);
  s.reply(Reply.CantOpenDataConnection, 'Use PORT, PASV or EPSV first.');
  return false;
}

/** Numbered names a drop box tries beside a taken one before it gives up (550). */
const MAX_NUMBERED_NAMES = 100;

/**
 * Where a STOR lands. Replacing a file takes the delete permission; a user
 * without it (a drop box) whose users-file entry says `dropBoxOnExisting:
 * "rename"` gets the first free `name (n).ext` instead of a refusal that
 * would tell the name exists.
 */
async function storeTarget(s: Session, target: ResolvedPath): Promise<{ destination: ResolvedPath; claim?: NameClaim }> {
  if (s.mayReplace(target.ftp)) return { destination: target };
  // A drop box: the upload may only make a new file, and claims the name until it ends.
  if (s.user?.dropBoxOnExisting !== 'rename') {
    const claim = await claimFree(s, target);
    if (!claim) s.authorize('delete', target);
    return { destination: target, claim };
  }
  const slash = target.ftp.lastIndexOf('/');
  const [dir, name] = [target.ftp.slice(0, slash + 1), target.ftp.slice(slash + 1)];
  // The room a name has: a file system's name limit, and what the full key (prefix, home, directories)
  // leaves, less one byte: S3 also looks at `name/`, a directory of that name.
  const { key: dirKey } = s.locate(s.resolve(dir).storage);
  const room = Math.min(MAX_NAME_BYTES, MAX_PATH_BYTES - 1 - Buffer.byteLength(dirKey === '' ? '' : `${dirKey}/`));
  for (let n = 0; n <= MAX_NUMBERED_NAMES; n++) {
    const candidate = n === 0 ? target : s.resolve(dir + numberedName(name, n, room));
    const claim = await claimFree(s, candidate);
    if (claim) return { destination: candidate, claim };
  }
  throw new StorageError('Exists', 'no free name');
}

/**
 * Claims target if it is free: claimed first, then looked up, so an upload
 * that publishes it and lets go meanwhile is seen (its file is there by the
 * time its claim is released); a name that exists is let go again.
 */
async function claimFree(s: Session, target: ResolvedPath): Promise<NameClaim | undefined> {
  const claim = claimName(s, target);
  if (!claim) return undefined;
  try {
    if (!(await s.exists(target))) return claim;
  } catch (err) {
    claim.release();
    throw err;
  }
  claim.release();
  return undefined;
}

/** A name an upload in this server holds while it runs: to the next upload that may not replace a file, it is taken. */
interface NameClaim {
  release(): void;
}

/** The names claimed per server, by where they are stored (a bucket and key, or a path under DATA_DIR). */
const claimed = new WeakMap<ServerContext, Set<string>>();

/**
 * Claims a name for an upload that may not replace a file, or undefined if
 * another upload here holds it. Two drop boxes storing one name at once would
 * both find it free; the claim gives the second another number (or a 550),
 * and the write's createOnly condition covers other servers and other tools.
 */
function claimName(s: Session, target: ResolvedPath): NameClaim | undefined {
  let names = claimed.get(s.server);
  if (!names) claimed.set(s.server, (names = new Set()));
  const { bucket, key } = s.locate(target.storage);
  const id = `${bucket ?? ''}/${key}`;
  if (names.has(id)) return undefined;
  names.add(id);
  return { release: () => void names.delete(id) };
}

/**
 * `name (n).ext`, shortened by whole characters to fit `bytes` (the stem
 * first, then the extension too): refusing a taken name that a free one of
 * the same length would not be would tell a drop box which names exist.
 */
function numberedName(name: string, n: number, bytes: number): string {
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const mark = ` (${n})`;
  const room = bytes - Buffer.byteLength(mark + ext);
  return room > 0 ? fitBytes(stem, room) + mark + ext : fitBytes(name, bytes - Buffer.byteLength(mark)) + mark;
}

/** The longest start of text, in whole characters, of at most `bytes` UTF-8 bytes. */
function fitBytes(text: string, bytes: number): string {
  let out = '';
  for (const ch of text) {
    if (Buffer.byteLength(out + ch) > bytes) break;
    out += ch;
  }
  return out;
}

/**
 * In TYPE A the bytes on the wire are not the stored bytes, so an offset
 * means nothing the client could have computed: refused (554), like SIZE.
 */
function restAllowed(s: Session): boolean {
  if (s.restOffset === 0 || s.type === 'I') return true;
  s.reply(Reply.InvalidRestart, 'REST is not supported in ASCII mode; use TYPE I.');
  return false;
}

function modeName(s: Session): string {
  return s.type === 'A' ? 'ASCII' : 'BINARY';
}
