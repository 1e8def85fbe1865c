/**
 * Upgrades (WebSocket) through the proxy: the HTTP server's `upgrade` requests on
 * `/v1/tasks/{id}/ports/{port}/...` (the owner's token) and `/r/{route}/...` are checked as
 * their HTTP requests are, then spliced: the request head (rewritten as for HTTP) goes to the
 * daemon, then bytes both ways until either side ends. A refused one gets a plain HTTP error
 * response on its socket, which is then closed.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { permissionDenied } from '@lessl/core';
import { authenticate } from './auth.js';
import type { ServiceDb } from './db.js';
import {
  isProxyUrl,
  NOT_FOUND,
  ownerTarget,
  refusalBody,
  routeTarget,
  upstreamHeaders,
  type Proxy,
  type Target,
  type Via,
} from './proxy.js';

/** A refusal of an upgrade: the status line's, the problem and what to count. */
type Refused = Parameters<typeof refusalBody>[0];

const UNAUTHORIZED: Refused = { status: 401, outcome: 'unauthorized', error: permissionDenied('', '', 'read') };

/** The target of an upgrade request, or why it is refused. */
const targetOf = (db: ServiceDb, req: IncomingMessage, via: Via): E.Either<Refused, Target> => {
  const url = req.url ?? '';
  if (!isProxyUrl(url)) return E.left(NOT_FOUND);
  if (via === 'route') return E.fromNullable(NOT_FOUND)(routeTarget(db, url));
  const user = authenticate(db, req.headers.authorization);
  if (user === undefined) return E.left(UNAUTHORIZED);
  return E.fromNullable(NOT_FOUND)(ownerTarget(db, user, url));
};

const REASONS: Readonly<Record<number, string>> = {
  401: 'Unauthorized',
  404: 'Not Found',
  501: 'Not Implemented',
  502: 'Bad Gateway',
};

/** Writes a refusal as a plain HTTP response on the socket and closes it. */
const refuseOn = (socket: Duplex, r: Refused): void => {
  const { body, headers } = refusalBody(r);
  const extra = r.status === 401 ? { 'www-authenticate': 'Bearer realm="lessl"' } : {};
  const lines = Object.entries({ ...headers, ...extra, connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(`HTTP/1.1 ${r.status} ${REASONS[r.status] ?? 'Error'}\r\n${lines.join('')}\r\n${body}`);
};

/** The request head the daemon gets (the request line with the path after the prefix, the rewritten headers). */
const requestHead = (req: IncomingMessage, t: Target): string => {
  const lines: string[] = [`${req.method ?? 'GET'} ${t.path} HTTP/1.1\r\n`];
  for (const [k, v] of Object.entries(upstreamHeaders(req, t)))
    for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined) lines.push(`${k}: ${String(one)}\r\n`);
  return `${lines.join('')}\r\n`;
};

/** Splices the client's socket and the daemon's connection: bytes both ways; either closing closes both. */
const splice = (socket: Duplex, conn: Duplex, done: () => void): void => {
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    socket.destroy();
    conn.destroy();
    done();
  };
  for (const s of [socket, conn]) {
    s.on('close', close);
    s.on('error', close);
  }
  socket.pipe(conn);
  conn.pipe(socket);
};

/**
 * The server's `upgrade` listener: proxies upgrades on the proxy's paths; any other upgrade
 * request is answered 404 (the service itself upgrades nothing).
 */
export const upgradeListener =
  (proxy: Proxy, db: ServiceDb) =>
  (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const started = performance.now();
    const via: Via = (req.url ?? '').startsWith('/r/') ? 'route' : 'owner';
    socket.on('error', () => socket.destroy());
    void (async () => {
      const t = targetOf(db, req, via);
      const conn = E.isLeft(t) ? t : await proxy.connect(t.right);
      if (E.isLeft(conn)) {
        refuseOn(socket, conn.left);
        proxy.count(via, conn.left.outcome, started);
        return;
      }
      if (socket.destroyed) {
        conn.right.destroy(); // the client went away while the connection was opened
        proxy.count(via, 'aborted', started);
        return;
      }
      if (E.isRight(t)) conn.right.write(requestHead(req, t.right));
      if (head.byteLength > 0) conn.right.write(head);
      splice(socket, conn.right, () => proxy.count(via, 'upgraded', started));
    })().catch(() => socket.destroy());
  };
