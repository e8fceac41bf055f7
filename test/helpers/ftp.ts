import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { Client, type FTPContext, type FTPResponse } from 'basic-ftp';

export interface FtpReply {
  code: number;
  /** Every line of the reply, without line ends. */
  lines: string[];
  /** The text of the last line after the code. */
  text: string;
}

/**
 * A bare control connection for asserting exact reply codes: it sends what it
 * is told, byte for byte, and parses replies per RFC 959 (multi-line included).
 */
export class RawFtp {
  readonly socket: Socket;
  #buffer = '';
  #replies: FtpReply[] = [];
  #waiters: Array<(reply: FtpReply) => void> = [];
  #pending: string[] = [];
  #closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.#onData(text));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = true;
      for (const waiter of this.#waiters.splice(0)) waiter({ code: 0, lines: [], text: 'closed' });
    });
  }

  /** Continues on another socket, e.g. the TLS socket after AUTH TLS. */
  static over(socket: Socket): RawFtp {
    return new RawFtp(socket);
  }

  /** Connects (from `localAddress`, another loopback address, if given) and reads the 220 greeting. */
  static async connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawFtp> {
    const socket = connect({ port, host, localAddress });
    await once(socket, 'connect');
    const ftp = new RawFtp(socket);
    const greeting = await ftp.read();
    if (greeting.code !== 220) throw new Error(`unexpected greeting ${greeting.lines.join('|')}`);
    return ftp;
  }

  /** Connects and logs in (USER, PASS), asserting 331 and 230. */
  static async login(port: number, user: string, password: string): Promise<RawFtp> {
    const ftp = await RawFtp.connect(port);
    await ftp.expect(`USER ${user}`, 331);
    await ftp.expect(`PASS ${password}`, 230);
    return ftp;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends one command line and returns its (first) reply. */
  async send(line: string): Promise<FtpReply> {
    this.socket.write(`${line}\r\n`);
    return this.read();
  }

  /** Sends a command and fails unless the reply has the expected code. */
  async expect(line: string, code: number): Promise<FtpReply> {
    const reply = await this.send(line);
    if (reply.code !== code) {
      throw new Error(`${line.split(' ')[0]}: expected ${code}, got ${reply.code} ${reply.lines.join(' | ')}`);
    }
    return reply;
  }

  /** The next reply (a closed connection reads as code 0). */
  read(timeoutMs = 20_000): Promise<FtpReply> {
    const next = this.#replies.shift();
    if (next) return Promise.resolve(next);
    if (this.#closed) return Promise.resolve({ code: 0, lines: [], text: 'closed' });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply within timeout')), timeoutMs);
      this.#waiters.push((reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  }

  /** Opens a passive data connection (EPSV) and returns the socket. */
  async passive(): Promise<Socket> {
    const reply = await this.expect('EPSV', 229);
    const port = Number(/\(\|\|\|(\d+)\|\)/.exec(reply.text)?.[1]);
    const socket = connect({ port, host: '127.0.0.1' });
    await once(socket, 'connect');
    // The server may cut the data connection (that is what some tests check); replies tell the outcome.
    socket.on('error', () => {});
    return socket;
  }

  close(): void {
    this.socket.destroy();
  }

  #onData(text: string): void {
    this.#buffer += text;
    let end: number;
    while ((end = this.#buffer.indexOf('\r\n')) >= 0) {
      this.#pending.push(this.#buffer.slice(0, end));
      this.#buffer = this.#buffer.slice(end + 2);
      const first = this.#pending[0]!;
      const last = this.#pending[this.#pending.length - 1]!;
      const code = first.slice(0, 3);
      const multi = first[3] === '-';
      if (!multi || (this.#pending.length > 1 && last.startsWith(`${code} `))) {
        const reply = { code: Number(code), lines: this.#pending, text: last.slice(4) };
        this.#pending = [];
        const waiter = this.#waiters.shift();
        if (waiter) waiter(reply);
        else this.#replies.push(reply);
      }
    }
  }
}

/** STOR with a raw client; `rest` goes right before STOR (after EPSV: REST binds to the next command only). */
export function store(ftp: RawFtp, name: string, content: Buffer | string, rest?: number): Promise<number> {
  return upload(ftp, 'STOR', name, content, rest);
}

/** APPE with a raw client: the final reply's code, or the refusal's when there is no 150. */
export function append(ftp: RawFtp, name: string, content: Buffer | string): Promise<number> {
  return upload(ftp, 'APPE', name, content);
}

async function upload(ftp: RawFtp, verb: 'STOR' | 'APPE', name: string, content: Buffer | string, rest?: number): Promise<number> {
  const data = await ftp.passive();
  if (rest !== undefined) await ftp.expect(`REST ${rest}`, 350);
  const first = await ftp.send(`${verb} ${name}`);
  if (first.code !== 150) {
    data.destroy();
    return first.code;
  }
  data.end(content);
  return (await ftp.read()).code;
}

/** RETR with a raw client: the final reply's code, and the bytes when the transfer started. */
export async function retrieve(ftp: RawFtp, name: string): Promise<{ code: number; body?: Buffer }> {
  const data = await ftp.passive();
  const first = await ftp.send(`RETR ${name}`);
  if (first.code !== 150) {
    data.destroy();
    return { code: first.code };
  }
  const body = await readAll(data);
  return { code: (await ftp.read()).code, body };
}

/** NLST with a raw client, asserting 150 then 226: the names, sorted. */
export async function nameList(ftp: RawFtp, path = ''): Promise<string[]> {
  const data = await ftp.passive();
  await ftp.expect(`NLST${path ? ` ${path}` : ''}`, 150);
  const text = (await readAll(data)).toString();
  const done = await ftp.read();
  if (done.code !== 226) throw new Error(`NLST ${path}: expected 226, got ${done.code} ${done.text}`);
  return text.split('\r\n').filter(Boolean).sort();
}

/** Stores content as `user` with a raw client, asserting 150 then 226. */
export async function putFile(port: number, user: string, password: string, name: string, content: Buffer): Promise<void> {
  const raw = await RawFtp.login(port, user, password);
  const data = await raw.passive();
  await raw.expect(`STOR ${name}`, 150);
  data.end(content);
  const done = await raw.read();
  if (done.code !== 226) throw new Error(`STOR ${name}: expected 226, got ${done.code} ${done.text}`);
  raw.close();
}

/** Fetches a file as `user` with a raw client, asserting 150 then 226. */
export async function getFile(port: number, user: string, password: string, name: string): Promise<Buffer> {
  const raw = await RawFtp.login(port, user, password);
  const data = await raw.passive();
  await raw.expect(`RETR ${name}`, 150);
  const body = await readAll(data);
  const done = await raw.read();
  if (done.code !== 226) throw new Error(`RETR ${name}: expected 226, got ${done.code} ${done.text}`);
  raw.close();
  return body;
}

/** Reads a socket to its end. */
export async function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of socket) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * basic-ftp speaks only passive mode; this strategy makes it use active mode.
 * It sends a real PORT: the server connects to our listener, and a loopback
 * relay hands that connection's bytes to the socket basic-ftp reads and writes.
 */
export function activeMode(client: Client): void {
  client.prepareTransfer = async (ftp: FTPContext): Promise<FTPResponse> => {
    const fromServer = createServer({ pauseOnConnect: true });
    const relay = createServer({ pauseOnConnect: true });
    await Promise.all([listen(fromServer), listen(relay)]);
    const port = (fromServer.address() as AddressInfo).port;
    const res = await ftp.request(`PORT 127,0,0,1,${port >> 8},${port & 255}`);
    const relayed = once(relay, 'connection') as Promise<[Socket]>;
    const local = connect({ port: (relay.address() as AddressInfo).port, host: '127.0.0.1' });
    await once(local, 'connect');
    const [inner] = await relayed;
    relay.close();
    fromServer.once('connection', (outer: Socket) => {
      fromServer.close();
      outer.on('error', () => inner.destroy());
      inner.on('error', () => outer.destroy());
      outer.pipe(inner);
      inner.pipe(outer);
    });
    // If the server never connects (the command failed), do not keep the port open.
    local.once('close', () => {
      fromServer.close();
      inner.destroy();
    });
    ftp.dataSocket = local;
    return res;
  };
}

function listen(server: ReturnType<typeof createServer>): Promise<void> {
  return new Promise((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
}

/** A logged-in basic-ftp client in passive or active mode. */
export async function basicFtp(port: number, user: string, password: string, mode: 'passive' | 'active'): Promise<Client> {
  const client = new Client(20_000);
  await client.access({ host: '127.0.0.1', port, user, password });
  if (mode === 'active') activeMode(client);
  return client;
}
