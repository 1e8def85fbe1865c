/**
 * The proxy to the ports tasks serve: a request to `/v1/tasks/{id}/ports/{port}/...` (the
 * owner's token) or to a shared route `/r/{route}/...` goes to the daemon over a connection
 * `tasks.connect` opens into the task's container (one connection per request, opened ahead as a
 * spare: proxy-spares.ts), the response streams back. Which task and port a request names (`Target`), the rewriting of its head, and
 * the HTTP exchange are here; upgrades (WebSocket) are in proxy-upgrade.ts.
 */
import {
  request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { Transform, type Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, notFound, unavailable, type AnyError } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { FastifyBaseLogger } from 'fastify';
import { sha256 } from './auth.js';
import type { ServiceDb, TaskRecord, UserRecord } from './db.js';
import { SERVICE } from './elements.js';
import type { Metrics } from './metrics.js';
import { problemOf } from './problem.js';
import { Spares } from './proxy-spares.js';
import { mainElement } from './runner.js';

/** How a request reached the proxy: the owner's token, or a shared route. */
export type Via = 'owner' | 'route';

/** How a proxied request ended (the `outcome` label of `lessl_proxy_requests_total`). */
export type Outcome =
  'ok' | 'upgraded' | 'not_found' | 'unauthorized' | 'too_large' | 'bad_gateway' | 'unsupported' | 'timeout' | 'cut' | 'aborted';

/** The task port a request goes to, and what of its URL goes along. */
export interface Target {
  readonly task: TaskRecord;
  readonly port: number;
  readonly via: Via;
  /** The part of the URL the proxy answers at (`X-Forwarded-Prefix`). */
  readonly prefix: string;
  /** The path after the prefix (`/` when empty) and the query, as the daemon gets them. */
  readonly path: string;
}

/** The one answer for a task port the caller may not reach, whatever the reason (no oracle). */
export const NO_SUCH_PORT: AnyError = {
  ...notFound(''),
  message: 'not found: no such task port (unknown, not yours, not running, or not declared in its ports)',
};

const OWNER_URL = /^\/v1\/tasks\/([^/?#]+)\/ports\/([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/;
const ROUTE_URL = /^\/r\/([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/;

/** True when `url` is one the proxy answers (an owner's port path or a route). */
export const isProxyUrl = (url: string): boolean => OWNER_URL.test(url) || ROUTE_URL.test(url);

/** The port of a path segment: an integer 1-65535 written plainly, else undefined. */
const portOf = (s: string): number | undefined => {
  const n = /^[1-9]\d{0,4}$/.test(s) ? Number(s) : 0;
  return n >= 1 && n <= 65535 ? n : undefined;
};

/** True when the task serves `port` now: not deleted, running, and declaring it. */
const serves = (r: TaskRecord | undefined, port: number): r is TaskRecord =>
  r !== undefined && !r.deleted && r.state === 'running' && (r.plan.ports ?? []).includes(port);

/** The target of an owner's request `url` (`/v1/tasks/{id}/ports/{port}...`): the caller's task (any, for admins), else undefined. */
export const ownerTarget = (db: ServiceDb, user: UserRecord, url: string): Target | undefined => {
  const m = OWNER_URL.exec(url);
  const [id, p] = [m?.[1] ?? '', m?.[2] ?? ''];
  const port = portOf(p);
  const r = db.tasks.get(id);
  if (m === null || port === undefined || !serves(r, port) || (r.owner !== user.name && !user.admin)) return undefined;
  return { task: r, port, via: 'owner', prefix: `/v1/tasks/${id}/ports/${p}`, path: `${m[3] ?? '/'}${m[4] ?? ''}` };
};

/** The target of a shared route's request `url` (`/r/{route}...`), else undefined. */
export const routeTarget = (db: ServiceDb, url: string): Target | undefined => {
  const m = ROUTE_URL.exec(url);
  if (m === null) return undefined;
  const route = m[1] ?? '';
  const hash = sha256(route);
  const rec = db.routes.get(hash);
  // the stored hash and the request's compared in constant time
  if (rec === undefined || !timingSafeEqual(Buffer.from(rec.hash, 'hex'), Buffer.from(hash, 'hex'))) return undefined;
  const r = db.tasks.get(rec.task);
  if (!serves(r, rec.port)) return undefined;
  return { task: r, port: rec.port, via: 'route', prefix: `/r/${route}`, path: `${m[2] ?? '/'}${m[3] ?? ''}` };
};

/** Headers that belong to one hop (RFC 9110 7.6.1), and those the service keeps to itself. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** The header names the `Connection` header names (hop-by-hop too). */
const connectionNamed = (h: IncomingHttpHeaders): Set<string> =>
  new Set(
    String(h.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== ''),
  );

/** The cookie header without lessl's cookies (names starting with `lessl`), or undefined when none is left. */
const foreignCookies = (v: string): string | undefined => {
  const kept = v
    .split(';')
    .map((c) => c.trim())
    .filter((c) => c !== '' && !c.toLowerCase().startsWith('lessl'));
  return kept.length === 0 ? undefined : kept.join('; ');
};

/** The end-to-end headers of `h` (hop-by-hop ones dropped). */
const endToEnd = (h: IncomingHttpHeaders): OutgoingHttpHeaders => {
  const named = connectionNamed(h);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k) && !named.has(k)) out[k] = v;
  return out;
};

/**
 * The head of the request the daemon gets: end-to-end headers but the lessl `Authorization` and
 * lessl cookies, `X-Forwarded-For`, `-Proto`, `-Host` and `-Prefix` set; an upgrade keeps its
 * `Connection: upgrade` and `Upgrade`.
 */
export const upstreamHeaders = (req: IncomingMessage, t: Target): OutgoingHttpHeaders => {
  const { authorization: _never, cookie, ...rest } = endToEnd(req.headers);
  const cookies = typeof cookie === 'string' ? foreignCookies(cookie) : undefined;
  const before = req.headers['x-forwarded-for'];
  const from = req.socket.remoteAddress ?? '';
  const tls = 'encrypted' in req.socket && req.socket.encrypted === true;
  const upgrade = req.headers.upgrade;
  return {
    ...rest,
    ...(cookies === undefined ? {} : { cookie: cookies }),
    'x-forwarded-for': typeof before === 'string' && before !== '' ? `${before}, ${from}` : from,
    'x-forwarded-proto': tls ? 'https' : 'http',
    'x-forwarded-host': req.headers.host ?? '',
    'x-forwarded-prefix': t.prefix,
    ...(upgrade === undefined ? {} : { connection: 'upgrade', upgrade }),
  };
};

/** What the proxy needs. */
export interface ProxyDeps {
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly metrics: Metrics;
  /** How long a daemon may take to answer the head of its response (then 504), in milliseconds. */
  readonly timeoutMs: number;
  /** The largest request body passed on, in bytes (then 413). */
  readonly maxBodyBytes: number;
  readonly log: FastifyBaseLogger;
  /** How long a spare connection opened ahead may stay idle, in milliseconds (0: no spares; default 10 s). */
  readonly spareIdleMs?: number;
}

/** How long a spare connection stays idle by default. */
export const SPARE_IDLE_MS = 10_000;

/** A failure answered to the client: its status and lessl error. */
interface Refusal {
  readonly status: number;
  readonly outcome: Outcome;
  readonly error: AnyError;
}

/** The refusal of a connection `tasks.connect` could not open: 404 for a task gone, 501 for a backend that reaches no ports, else 502. */
const connectRefusal = (e: AnyError): Refusal =>
  e._tag === 'NotFound' || e._tag === 'InvalidEntry'
    ? { status: 404, outcome: 'not_found', error: NO_SUCH_PORT }
    : e._tag === 'Unsupported'
      ? { status: 501, outcome: 'unsupported', error: e }
      : { status: 502, outcome: 'bad_gateway', error: unavailable(e.id, `bad gateway: ${e.message}`) };

/** The problem document's bytes and headers of a refusal. */
export const refusalBody = (r: Refusal): { body: string; headers: Record<string, string> } => {
  const body = JSON.stringify(problemOf(r.error, r.status));
  return {
    body,
    headers: {
      'content-type': 'application/problem+json',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
    },
  };
};

/** The 404 refusal: no such task port (whatever the reason). */
export const NOT_FOUND: Refusal = { status: 404, outcome: 'not_found', error: NO_SUCH_PORT };

/**
 * The proxy: opens connections into tasks, counts them (every one is closed when its exchange
 * ends, whichever side ends it), and measures what it does.
 */
export class Proxy {
  private readonly open = new Set<Duplex>();
  /** The idle spare connections, one per task port at most. */
  readonly spares: Spares;
  constructor(readonly d: ProxyDeps) {
    this.spares = new Spares(d.spareIdleMs ?? SPARE_IDLE_MS);
  }

  /** Connections into tasks open now and in use (idle spares are not counted). */
  get connections(): number {
    return this.open.size - this.spares.size;
  }

  /** Opens a connection to the target's port (tracked until it closes), or the refusal to answer. */
  async connect(t: Target): Promise<E.Either<Refusal, Duplex>> {
    const c = await this.d.backend.tasks.connect(mainElement(t.task), t.port, SERVICE)();
    if (E.isLeft(c)) return E.left(connectRefusal(c.left));
    const conn = c.right;
    this.open.add(conn);
    conn.once('close', () => this.open.delete(conn));
    return E.right(conn);
  }

  /** A connection to the target's port: its spare when one is idle, else a new one. */
  async take(t: Target): Promise<E.Either<Refusal, Duplex>> {
    const spare = this.spares.take(spareKey(t));
    return spare === undefined ? await this.connect(t) : E.right(spare);
  }

  /**
   * Opens the target's next spare ahead, once an exchange is answered: the connect (and a daemon
   * that forks at accept) then costs the next request nothing and this one no CPU.
   */
  refill(t: Target): void {
    this.spares.refill(spareKey(t), async () => E.getOrElseW(() => undefined)(await this.connect(t)));
  }

  /** Counts one proxied request (or upgrade) that ended: how, and how long it took since `started` (ms). */
  count(via: Via, outcome: Outcome, started: number): void {
    this.d.metrics.proxied(via, outcome, (performance.now() - started) / 1000);
  }

  /** Closes every connection into tasks (the service is closing). */
  closeAll(): void {
    this.spares.close();
    for (const c of [...this.open]) c.destroy();
  }

  /** Proxies one HTTP request (not an upgrade) to `t`, answering on `res`. */
  async http(req: IncomingMessage, res: ServerResponse, t: Target): Promise<void> {
    const started = performance.now();
    const length = Number(req.headers['content-length'] ?? 0);
    if (Number.isFinite(length) && length > this.d.maxBodyBytes)
      return this.refuse(res, t.via, started, tooLarge(this.d.maxBodyBytes));
    const conn = await this.take(t);
    if (E.isLeft(conn)) return this.refuse(res, t.via, started, conn.left);
    if (res.destroyed) {
      // the client went away while the connection was opened
      conn.right.destroy();
      return this.count(t.via, 'aborted', started);
    }
    new Exchange(this, req, res, t, conn.right, started).run();
  }

  /** Answers a refusal as a problem document (and counts it). */
  refuse(res: ServerResponse, via: Via, started: number, r: Refusal): void {
    const { body, headers } = refusalBody(r);
    if (!res.headersSent) res.writeHead(r.status, headers).end(body);
    else res.destroy();
    this.count(via, r.outcome, started);
  }
}

/** The spares' key of a target: its task and port. */
const spareKey = (t: Target): string => `${t.task.id}:${t.port}`;

/** True when the request has no body (no length or 0, not chunked): it ends with its head. */
const bodiless = (req: IncomingMessage): boolean =>
  req.headers['transfer-encoding'] === undefined && Number(req.headers['content-length'] ?? 0) === 0;

/** The 413 of a body past `max` bytes. */
const tooLarge = (max: number): Refusal => ({
  status: 413,
  outcome: 'too_large',
  error: invalidEntry(`the request body is larger than ${max} bytes`, '', ['body']),
});

/** A byte counter that fails past `max` bytes. */
const bounded = (max: number): Transform => {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.byteLength;
      cb(n > max ? new BodyTooLarge() : null, chunk);
    },
  });
};
class BodyTooLarge extends Error {}

/** One request and its response between a client and a daemon. */
class Exchange {
  private outcome: Outcome | undefined;
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly p: Proxy,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly t: Target,
    private readonly conn: Duplex,
    private readonly started: number,
  ) {}

  /** Sends the request, streams the response; the connection closes when either side is done. */
  run(): void {
    const { req, res, t, conn } = this;
    const up = request({ createConnection: () => conn, method: req.method, path: t.path, headers: upstreamHeaders(req, t) });
    this.timer = setTimeout(() => this.fail(up, timedOut(this.p.d.timeoutMs, t)), this.p.d.timeoutMs);
    up.on('response', (ur) => this.respond(ur));
    up.on('error', (e) => this.fail(up, e instanceof BodyTooLarge ? tooLarge(this.p.d.maxBodyBytes) : badGateway(t, e)));
    res.on('close', () => {
      if (!res.writableFinished) this.end('aborted'); // the client went away: the daemon's connection goes too
      up.destroy();
      conn.destroy();
    });
    res.on('finish', () => this.p.refill(t));
    if (bodiless(req)) return void up.end(); // the head goes out now, in one write
    const limit = bounded(this.p.d.maxBodyBytes);
    limit.on('error', (e) => up.destroy(e));
    req.pipe(limit).pipe(up);
  }

  /** The daemon's response head arrived: it streams back (back-pressure both ways by pipe). */
  private respond(ur: IncomingMessage): void {
    clearTimeout(this.timer);
    if (this.outcome !== undefined) return void ur.destroy();
    this.res.writeHead(ur.statusCode ?? 502, ur.statusMessage, endToEnd(ur.headers));
    ur.pipe(this.res);
    ur.on('end', () => this.end('ok'));
    ur.on('close', () => {
      if (ur.complete) return;
      // the daemon closed mid-body: the client's response is cut, as proxies do
      this.p.d.log.warn({ task: this.t.task.id, port: this.t.port }, 'proxy: the daemon closed the connection mid-response');
      this.end('cut');
      this.res.destroy();
    });
  }

  /** The exchange failed before (or while) answering: a problem when no head went out yet, else the response is cut. */
  private fail(up: ReturnType<typeof request>, r: Refusal): void {
    clearTimeout(this.timer);
    if (this.outcome !== undefined) return;
    up.destroy();
    this.conn.destroy();
    if (this.res.headersSent) this.end('cut');
    else this.end(r.outcome);
    const { body, headers } = refusalBody(r);
    if (this.res.headersSent) this.res.destroy();
    else this.res.writeHead(r.status, { ...headers, connection: 'close' }).end(body);
  }

  /** Counts the exchange once. */
  private end(outcome: Outcome): void {
    if (this.outcome !== undefined) return;
    this.outcome = outcome;
    clearTimeout(this.timer);
    this.p.count(this.t.via, outcome, this.started);
  }
}

/** The 504 of a daemon that did not answer in time. */
const timedOut = (ms: number, t: Target): Refusal => ({
  status: 504,
  outcome: 'timeout',
  error: unavailable(t.task.id, `gateway timeout: the daemon on port ${t.port} did not answer within ${ms} ms`),
});

/** The 502 of a daemon that closed or failed before its response head. */
const badGateway = (t: Target, e: Error): Refusal => ({
  status: 502,
  outcome: 'bad_gateway',
  error: unavailable(t.task.id, `bad gateway: the daemon on port ${t.port} closed the connection (${e.message})`),
});
