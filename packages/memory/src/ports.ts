/**
 * Ports of fake processes: a fake process listens on a port (`io.listen`), and `tasks.connect`
 * hands it one end of an in-memory byte stream while the caller gets the other. The fake
 * `httpd` of the tiny shell serves HTTP on such a port, for tests of code that reaches daemons.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { unavailable, type TaskError } from '@lessl/core';

/** What the fake httpd uses of its process's `FakeIO` (process.ts; named here, not imported: process.ts imports this module). */
interface HttpdIO {
  stderr(data: string): void;
  readonly signal: AbortSignal;
  sleep(ms: number): Promise<void>;
  listen(port: number, accept: (conn: Duplex) => void): void;
}

/** Two connected byte streams: what one side writes, the other reads; ending or destroying one ends the other. */
export const duplexPair = (): [Duplex, Duplex] => {
  const sides: Duplex[] = [];
  const side = (peer: () => Duplex | undefined): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer()?.push(chunk);
        cb();
      },
      final(cb) {
        peer()?.push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (p !== undefined && !p.destroyed) p.destroy();
        cb(err);
      },
    });
  sides.push(
    side(() => sides[1]),
    side(() => sides[0]),
  );
  const [a, b] = sides;
  if (a === undefined || b === undefined) throw new Error('unreachable');
  return [a, b];
};

/** The ports one fake run listens on. */
export class FakePorts {
  private readonly accept = new Map<number, (conn: Duplex) => void>();
  private readonly open = new Set<Duplex>();
  private closed = false;

  /** Serves `port`: each connection to it is handed to `accept` (a second call replaces the first). */
  listen(port: number, accept: (conn: Duplex) => void): void {
    if (!this.closed) this.accept.set(port, accept);
  }

  /** True while something of this run listens on `port`. */
  serves(port: number): boolean {
    return !this.closed && this.accept.has(port);
  }

  /** A connection to `port` for task `task`: `Unavailable` when nothing listens there. */
  connect(task: string, port: number): E.Either<TaskError, Duplex> {
    const accept = this.accept.get(port);
    if (accept === undefined || this.closed)
      return E.left(unavailable(task, `connection refused: nothing listens on port ${port} in task ${task}`));
    const [client, server] = duplexPair();
    for (const s of [client, server]) {
      this.open.add(s);
      s.once('close', () => this.open.delete(s));
    }
    accept(server);
    return E.right(client);
  }

  /** The process ended: nothing listens any more, and open connections end. */
  close(): void {
    this.closed = true;
    this.accept.clear();
    for (const s of [...this.open]) s.destroy();
  }
}

/** The port of busybox-style flags `-p [IP:]PORT`, default 80. */
const portOf = (args: readonly string[]): number => {
  const i = args.indexOf('-p');
  const v = i >= 0 ? (args[i + 1] ?? '') : '80';
  return Number(v.slice(v.lastIndexOf(':') + 1));
};

/** Answers one request of the fake httpd (see `fakeHttpd`). */
const answer = async (req: IncomingMessage, res: ServerResponse, io: HttpdIO): Promise<void> => {
  const body: Buffer[] = [];
  for await (const c of req) body.push(Buffer.from(c as Uint8Array));
  const url = req.url ?? '/';
  const slow = /^\/slow\/(\d+)/.exec(url);
  if (url.startsWith('/hang')) return;
  if (slow !== null) await io.sleep(Number(slow[1]));
  if (url.startsWith('/cut')) {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' });
    res.write('partial');
    setTimeout(() => res.socket?.destroy(), 10);
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(Buffer.concat([Buffer.from(`${req.method ?? ''} ${url}\n`), ...body]));
};

/**
 * A fake `httpd [-f] -p [IP:]PORT`: serves HTTP/1.1 on the port until killed. Every request is
 * answered 200 with `METHOD URL\n` and the request's body, except `/slow/MS` (answered after MS
 * milliseconds), `/hang` (never answered) and `/cut` (headers and part of the body, then the
 * connection is cut). Exits 143 (TERM) or 137 (KILL).
 */
export const fakeHttpd = async (args: readonly string[], io: HttpdIO): Promise<number> => {
  const port = portOf(args);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    io.stderr(`httpd: bad port\n`);
    return 1;
  }
  const server = createServer((req, res) => void answer(req, res, io).catch(() => res.destroy()));
  io.listen(port, (conn) => server.emit('connection', conn));
  await new Promise<void>((res) => {
    if (io.signal.aborted) res();
    else io.signal.addEventListener('abort', () => res(), { once: true });
  });
  server.close();
  return io.signal.reason === 'KILL' ? 137 : 143;
};
