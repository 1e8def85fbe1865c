/**
 * `createServer`: the task service on fastify, over a lessl backend. Embedded default: the
 * Docker backend over one on-disk level database under `data`, which also holds the service's
 * users, tokens, jobs and task records.
 */
import { mkdirSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import { join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import * as E from 'fp-ts/lib/Either.js';
import { Level } from 'level';
import { MemoryLevel } from 'memory-level';
import { invalidEntry, LesslError, notFound, runtimeError, unwrap, type Logger } from '@lessl/core';
import { registryOpenFailure } from '@lessl/level';
import { type Backend, type Durability } from '@lessl/kit';
import { EgressGuard, openDockerBackend, type DockerBackendOptions, type PreloadResult } from '@lessl/docker';
import { bootstrapAdmin, ownerAuthorizer, serviceFunctionAuthorizer } from './auth.js';
import { ServiceDb, type StringDb } from './db.js';
import { makeMetrics, type Metrics } from './metrics.js';
import { DEFAULT_POLICY, type Policy, type QuotaPolicy } from './plan.js';
import { installRateLimit, QuotaDesk, quotaPolicyOf } from './quotas.js';
import { HttpProblem, problemOf } from './problem.js';
import { JobQueue } from './queue.js';
import { registerRoutes } from './routes.js';
import type { ImageRoutes } from './images.js';
import { configurePool, operationsOf, orThrow, preloadImages, type PoolConfig, type PreloadImage } from './operate.js';
import { Runner } from './runner.js';
import { restoreHosts, withStoredHosts } from './hosts.js';
import { Leaver } from './users-leave.js';
import { Proxy } from './proxy.js';
import { EventCursors } from './cursors.js';
import { FunctionDesk } from './functions.js';
import { DEFAULT_RETENTION, prune, type PruneResult, type Retention } from './retention.js';

/** The retention windows of `o`, checked: each a known key and a non-negative number of seconds. */
const retentionOf = (o: ServerOptions): Retention => {
  const r = { ...DEFAULT_RETENTION, ...(o.retention ?? {}) };
  for (const [k, v] of Object.entries(r)) {
    const why = !(k in DEFAULT_RETENTION)
      ? `unknown retention window ${k} (tasks, jobs, events)`
      : typeof v !== 'number' || !Number.isFinite(v) || v < 0
        ? `retention.${k} must be a number of seconds >= 0`
        : undefined;
    if (why !== undefined) throw new LesslError(invalidEntry(why, '', ['retention', k]));
  }
  return r;
};

/** The proxy's bounds: the timeout of `o` in milliseconds (default 30 s), checked, and the policy's body bound. */
const proxyOptionsOf = (o: ServerOptions, policy: Policy): { timeoutMs: number; maxBodyBytes: number } => {
  const ms = o.proxyTimeoutMs ?? 30_000;
  if (!Number.isSafeInteger(ms) || ms < 1)
    throw new LesslError(invalidEntry('proxyTimeoutMs must be a number of milliseconds >= 1', '', ['proxyTimeoutMs']));
  return { timeoutMs: ms, maxBodyBytes: policy.maxProxyBodyBytes };
};

/** The durability of `o` (default `disk`), checked. */
const durabilityOf = (o: ServerOptions): Durability => {
  const d = o.durability ?? 'disk';
  if (d !== 'disk' && d !== 'process')
    throw new LesslError(invalidEntry('durability must be "disk" or "process"', '', ['durability']));
  return d;
};

/** Options of `createServer`. */
export interface ServerOptions {
  /** A backend to use (e.g. `openMemoryBackend({ authorize: ownerAuthorizer })`); default: the Docker backend over `data`. */
  readonly backend?: Backend;
  /** Directory of the on-disk database (created if missing); default: in memory (tests). */
  readonly data?: string;
  /** Operator policy: defaults, maxima, ttl, networks, fetch limits, quotas (merged over `DEFAULT_POLICY`; `quotas` key by key). */
  readonly policy?: PolicyOptions;
  /** Jobs run at once (default 4). */
  readonly concurrency?: number;
  /** The admin's token (default: env LESSL_ADMIN_TOKEN; else one is made at first start: `initialAdminToken`). */
  readonly adminToken?: string;
  /** fastify/pino logger options (default: off). */
  readonly logger?: FastifyServerOptions['logger'];
  /** Largest request body in bytes (default 16 MiB). */
  readonly bodyLimit?: number;
  /**
   * How long what is over is kept, in seconds: deleted and expired task records, ended jobs,
   * events (merged over `DEFAULT_RETENTION`); each reaper pass removes what is past its window.
   */
  readonly retention?: Partial<Retention>;
  /** Milliseconds between TTL reaper (and retention) passes (default 30,000). */
  readonly reapIntervalMs?: number;
  /** How commands run (default `['/bin/sh', '-c']`). */
  readonly shell?: readonly string[];
  /** Docker backend options for the embedded default (the registry, authorizer and egress guard are the service's). */
  readonly docker?: Omit<DockerBackendOptions, 'registry' | 'authorize' | 'egress'>;
  /**
   * The warm pool at start (docs/service.md): profiles of an image and task limits, each keeping
   * `min` containers ready; `PUT /v1/pool` changes it at run time. Checked: a bad one fails the start.
   */
  readonly pool?: PoolConfig;
  /**
   * How durable acknowledged writes are (the service's records and the registry it opens):
   * `disk` (default: fsynced, they survive a power cut) or `process` (they survive a crash of
   * the process only). A given `backend` keeps the durability it was opened with.
   */
  readonly durability?: Durability;
  /** Images made present at start: created from their source when missing (public unless `owner`), fetched again when their content is gone. */
  readonly preload?: readonly PreloadImage[];
  /**
   * TLS termination: the service answers `https://` with this certificate (chain) and its
   * private key, PEM. Checked before anything is opened: an unreadable PEM or a key that does
   * not match the certificate fails the start. A new certificate takes a restart.
   */
  readonly tls?: ServerTls;
  /**
   * How long the proxy waits for a daemon's response head (`/v1/tasks/{id}/ports/...`, `/r/...`)
   * before answering 504, in milliseconds (default 30,000).
   */
  readonly proxyTimeoutMs?: number;
}

/** The policy `createServer` takes: any part of `Policy`, and of its quotas. */
export type PolicyOptions = Partial<Omit<Policy, 'quotas'>> & { readonly quotas?: Partial<QuotaPolicy> };

/** The certificate (PEM, the chain after it) and its private key (PEM, unencrypted) of `ServerOptions.tls`. */
export interface ServerTls {
  readonly cert: string | Uint8Array;
  readonly key: string | Uint8Array;
}

/** The base URL fastify answers, as `https:` when the service terminates TLS (fastify names the scheme by its own `https` option only). */
const urlOf = (o: ServerOptions, url: string): string => (o.tls === undefined ? url : url.replace(/^http:/, 'https:'));

/** The fastify options of the HTTP server: over TLS when `tls` is given (its PEM checked here). */
const tlsOf = (o: ServerOptions): Pick<FastifyServerOptions, 'serverFactory'> => {
  const tls = o.tls;
  if (tls === undefined) return {};
  const pem = { cert: Buffer.from(tls.cert), key: Buffer.from(tls.key) };
  try {
    createSecureContext(pem); // a bad PEM, or a key that is not the certificate's, throws here
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new LesslError(invalidEntry(`tls: the certificate and key are not a usable pair (${why})`, '', ['tls']));
  }
  // fastify's own defaults for its HTTP server: no request timeout (long polls), 72 s keep-alive
  return { serverFactory: (handler) => createHttpsServer({ ...pem, keepAliveTimeout: 72_000, requestTimeout: 0 }, handler) };
};

/** A running service. */
export interface LesslServer {
  readonly app: FastifyInstance;
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly queue: JobQueue;
  readonly metrics: Metrics;
  /** What preloading did at start, per image (failures are listed here, they do not stop the start). */
  readonly preloaded: readonly PreloadResult[];
  /** The admin token made at a first start without one (print it once), else undefined. */
  readonly initialAdminToken: string | undefined;
  /** Listens (default 127.0.0.1, a free port); answers the base URL (`https://` with `tls`). */
  listen(opts?: { host?: string; port?: number }): Promise<string>;
  /** Runs one reaper pass now. */
  reap(): Promise<number>;
  /** Runs one retention pass now (`retention`): answers what it removed. */
  prune(): Promise<PruneResult>;
  /** Stops the reaper and the queue (running tasks keep running; the next start resumes their jobs), closes the server and what it opened. */
  close(): Promise<void>;
}

/** Opens the databases (the service's records first: the hosts registered over REST) and the backend; answers what to close. */
const openStorage = async (
  o: ServerOptions,
  policy: Policy,
  logger: Logger | undefined,
  durability: Durability,
): Promise<{ backend: Backend; db: ServiceDb; closers: (() => Promise<void>)[] }> => {
  const closers: (() => Promise<void>)[] = [];
  let root: Level<string, string> | MemoryLevel<string, string>;
  if (o.data !== undefined) {
    mkdirSync(o.data, { recursive: true });
    root = new Level<string, string>(join(o.data, 'db'), { valueEncoding: 'utf8' });
  } else root = new MemoryLevel<string, string>({ valueEncoding: 'utf8' });
  try {
    await root.open();
  } catch (err) {
    // another process serving the same data directory holds its lock: say so, and where
    throw new LesslError(runtimeError('', registryOpenFailure({ location: join(o.data ?? '', 'db') }, err), err));
  }
  closers.push(() => root.close());
  const db = await ServiceDb.open(root.sublevel('svc') as unknown as StringDb, durability);
  if (o.backend !== undefined) return { backend: o.backend, db, closers };
  const reg = root.sublevel('reg') as unknown as StringDb;
  const backend = await unwrap(
    openDockerBackend({
      ...withStoredHosts(o.docker ?? {}, db.hosts.values()),
      registry: { db: reg },
      durability,
      authorize: ownerAuthorizer,
      authorizeFunction: serviceFunctionAuthorizer,
      egress: { allowNetworks: policy.allowNetworks },
      // the backend reports through the server's own (pino) logger, unless the caller gave it one
      ...(logger === undefined || o.docker?.logger !== undefined ? {} : { logger }),
    }),
  );
  closers.unshift(() => backend.close());
  return { backend, db, closers };
};

/** Field `k` of a thrown value when it is an object that has it. */
const prop = (u: unknown, k: string): unknown => (typeof u === 'object' && u !== null && k in u ? Reflect.get(u, k) : undefined);

/** Maps any error fastify or a handler raised to a problem; never a 5xx for bad input. */
const installErrors = (app: FastifyInstance): void => {
  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof HttpProblem) {
      void reply.headers(err.headers);
      return reply
        .code(err.status)
        .type('application/problem+json')
        .send({ ...problemOf(err.error, err.status, req.url), ...err.extra });
    }
    const [statusCode, message, code] = [prop(err, 'statusCode'), prop(err, 'message'), prop(err, 'code')];
    const status = typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500 ? statusCode : 500;
    if (status === 500) req.log.error({ err }, 'request failed');
    const lessl =
      status === 500
        ? runtimeError('', 'internal error', err)
        : invalidEntry(
            typeof message === 'string' ? message : 'bad request',
            '',
            typeof code === 'string' && code.startsWith('FST_ERR_CTP') ? ['body'] : [],
          );
    return reply
      .code(status)
      .type('application/problem+json')
      .send(problemOf(lessl, status, req.url));
  });
  app.setNotFoundHandler((req, reply) =>
    reply
      .code(404)
      .type('application/problem+json')
      .send(problemOf(notFound(req.url), 404, req.url)),
  );
};

/** Removes a task (kill, containers, volumes, results) and marks it `deleted` or `expired`; shared by DELETE and the reaper. */
const taskRemover =
  (db: ServiceDb, queue: JobQueue, runner: Runner) =>
  async (task: string, mark: 'deleted' | 'expired'): Promise<void> => {
    const r = db.tasks.get(task);
    if (r === undefined || r.deleted || (mark === 'expired' && r.state === 'expired')) return;
    if (mark === 'deleted') {
      // of concurrent removals, the one that marks it goes on
      let marked = false;
      await db.updateTask(task, (cur) => (cur.deleted ? undefined : ((marked = true), { ...cur, deleted: true })));
      if (!marked) return;
    }
    const job = db.jobs.get(r.job);
    if (job?.state === 'queued' && job.tasks.every((t) => t === task || db.tasks.get(t)?.deleted === true))
      await queue.cancel(job.id);
    await runner.kill(task);
    await runner.serialize(task, () => runner.teardown(task, true));
    await runner.update(task, (cur) =>
      mark === 'expired' ? { state: 'expired', ended: cur.ended ?? new Date().toISOString() } : { deleted: true },
    );
  };

/** The TTL reaper and the retention passes: one at a time each, every `intervalMs`. */
class Reaper {
  private reaping: Promise<number> | undefined;
  private pruning: Promise<PruneResult> | undefined;
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly db: ServiceDb,
    private readonly removeTask: (task: string, mark: 'expired') => Promise<void>,
    private readonly pruneOnce: () => Promise<PruneResult>,
    private readonly reaped: Metrics['reaped'],
    intervalMs: number,
  ) {
    this.timer = setInterval(
      () =>
        void this.reap()
          .then(() => this.prune())
          .catch(() => undefined),
      intervalMs,
    );
    this.timer.unref();
  }

  /** One reaper pass: expired tasks removed; answers how many. */
  reap(): Promise<number> {
    return (this.reaping ??= (async () => {
      const due = [...this.db.tasks.values()].filter(
        (r) => !r.deleted && r.state !== 'expired' && r.expires !== null && Date.parse(r.expires) <= Date.now(),
      );
      for (const r of due) await this.removeTask(r.id, 'expired');
      this.reaped.inc(due.length);
      return due.length;
    })().finally(() => (this.reaping = undefined)));
  }

  /** One retention pass. */
  prune(): Promise<PruneResult> {
    return (this.pruning ??= this.pruneOnce().finally(() => (this.pruning = undefined)));
  }

  /** Stops the timer and waits for the passes under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.reaping?.catch(() => undefined);
    await this.pruning?.catch(() => undefined);
  }
}

/** The HTTP side before the routes: validation by the codecs, problems for errors, request metrics, the rate limit, the OpenAPI document. */
const prepareHttp = async (app: FastifyInstance, metrics: Metrics, db: ServiceDb, quotas: QuotaDesk): Promise<void> => {
  app.setValidatorCompiler(() => () => true); // requests are validated by the io-ts codecs (http.ts)
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.removeContentTypeParser('text/plain'); // bodies are JSON: anything else is 415
  installErrors(app);
  app.addHook('onResponse', async (req, reply) => {
    metrics.requests.observe(
      { method: req.method, route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  await installRateLimit(app, db, quotas, metrics);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'lessl task service', version: '1.0.0', description: 'Run seed-001 task specs in containers on demand.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
};

/** The operator's images, then the pool over them; a bad configuration throws (the start fails). */
const prepareOperations = async (
  app: FastifyInstance,
  backend: Backend,
  policy: Policy,
  o: ServerOptions,
): Promise<PreloadResult[]> => {
  const preloaded = orThrow(await preloadImages(backend, policy, o.preload ?? []));
  for (const p of preloaded) if (p.done === 'failed') app.log.warn({ image: p.id, error: p.error }, 'preload failed');
  if (o.pool !== undefined) orThrow(await configurePool(backend, policy, o.pool));
  return preloaded;
};

/** The policy of `o` and its egress guard, checked. */
const policyOf = (o: ServerOptions): { policy: Policy; egress: EgressGuard } => {
  const policy: Policy = { ...DEFAULT_POLICY, ...(o.policy ?? {}), quotas: quotaPolicyOf(o.policy?.quotas) };
  const egress = EgressGuard.of(policy.allowNetworks);
  if (E.isLeft(egress)) throw new LesslError(invalidEntry(`policy.allowNetworks: ${egress.left}`, '', ['policy.allowNetworks']));
  for (const k of ['maxInvokeBytes', 'maxProxyBodyBytes'] as const)
    if (!Number.isSafeInteger(policy[k]) || policy[k] < 1)
      throw new LesslError(invalidEntry(`policy.${k} must be a number of bytes >= 1`, '', [`policy.${k}`]));
  return { policy, egress: egress.right };
};

/**
 * Creates the service: storage, the queue (started: it resumes jobs a crash left), the reaper
 * and the routes. Call `listen()` to serve.
 * @example
 * const server = await createServer({ data: '/var/lib/lessl', adminToken: process.env.LESSL_ADMIN_TOKEN });
 * const url = await server.listen({ host: '127.0.0.1', port: 8080 });
 * // POST `${url}/v1/tasks?wait=30` with a seed-001 task spec and `authorization: Bearer <token>`
 */
export const createServer = async (o: ServerOptions = {}): Promise<LesslServer> => {
  // phase 1: storage and records (the HTTP server is made first: the backend logs through its logger)
  const app = Fastify({ logger: o.logger ?? false, bodyLimit: o.bodyLimit ?? 16 << 20, return503OnClosing: true, ...tlsOf(o) });
  const { policy, egress } = policyOf(o);
  const retention = retentionOf(o);
  const durability = durabilityOf(o);
  const bounds = proxyOptionsOf(o, policy);
  const logger = o.logger === undefined || o.logger === false ? undefined : app.log;
  const { backend, db, closers } = await openStorage(o, policy, logger, durability);
  const initialAdminToken = await bootstrapAdmin(db, o.adminToken ?? process.env.LESSL_ADMIN_TOKEN);
  const closeStorage = async (): Promise<void> => {
    await db.close().catch(() => undefined);
    for (const c of closers) await c().catch(() => undefined);
  };

  // phase 2: the runner, the queue, the reaper
  const w = prepareWork(o, backend, db, policy, egress, retention);

  // phase 3: HTTP
  await prepareHttp(app, w.metrics, db, w.quotas);
  const cursors = new EventCursors(await db.eventSecret());
  const proxy = (w.routesOf.proxy = new Proxy({ ...bounds, backend, db, metrics: w.metrics, log: app.log }));
  w.routesOf.images = await registerRoutes(app, { ...w, backend, db, policy, egress, cursors, proxy });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.ready();

  // phase 4: the operator's configuration, then the queue (a bad configuration fails the start)
  const preloaded = await prepareOperations(app, backend, policy, o).catch(async (err: unknown) => {
    await w.reaper.stop();
    await app.close();
    await closeStorage();
    throw err;
  });
  for (const f of await restoreHosts(backend, db)) app.log.warn(f, 'a registered host does not answer');
  w.queue.start();
  w.leaver.start();
  await finishRemovals(db, w.runner);

  let closing: Promise<void> | undefined;
  return {
    app,
    backend,
    db,
    queue: w.queue,
    metrics: w.metrics,
    preloaded,
    initialAdminToken,
    listen: async (l = {}) => urlOf(o, await app.listen({ host: l.host ?? '127.0.0.1', port: l.port ?? 0 })),
    reap: () => w.reaper.reap(),
    prune: () => w.reaper.prune(),
    close: () =>
      (closing ??= (async () => {
        const reaperStopped = w.reaper.stop(); // its timer at once; its passes under way after the queue and HTTP
        await w.queue.stop();
        w.leaver.stop();
        await app.close();
        await reaperStopped;
        await closeStorage();
      })()),
  };
};

/** The working parts: the runner, the queue, the metrics, the task remover, the reaper and the leaver. */
const prepareWork = (
  o: ServerOptions,
  backend: Backend,
  db: ServiceDb,
  policy: Policy,
  egress: EgressGuard,
  retention: Retention,
) => {
  const runner = new Runner({ backend, db, policy, egress, shell: o.shell ?? ['/bin/sh', '-c'] });
  // invocation jobs run on the function desk (made below, once the metrics are)
  const queue = new JobQueue(db, runner, o.concurrency ?? 4, (j, signal) => functions.runJob(j, signal));
  const routesOf: { images?: ImageRoutes; proxy?: Proxy } = {};
  const metrics = makeMetrics(db, () => queue.active, {
    pool: () => operationsOf(backend).pool?.stats(),
    images: async () => (await routesOf.images?.counts()) ?? {},
    functions: () => functions.stats(),
    proxyConnections: () => routesOf.proxy?.connections ?? 0,
  });
  const functions = new FunctionDesk({ backend, db, policy, shell: runner.shell, metrics });
  const removeTask = taskRemover(db, queue, runner);
  const hasElements = async (t: string): Promise<boolean> => runner.busy(t) || (await runner.hasElements(t));
  const pruneOnce = (): Promise<PruneResult> => prune(db, backend, retention, hasElements);
  const reaper = new Reaper(db, removeTask, pruneOnce, metrics.reaped, o.reapIntervalMs ?? 30_000);
  const leaver = new Leaver({ backend, db, queue, runner, policy, removeTask });
  const quotas = new QuotaDesk(db, backend, policy.quotas, (reason) => metrics.quotaRefusals.inc({ reason }), policy.imageStore);
  return { runner, queue, routesOf, metrics, removeTask, reaper, functions, leaver, quotas };
};

/** Finishes the removals a crash interrupted: a deleted task keeps no element. */
const finishRemovals = async (db: ServiceDb, runner: Runner): Promise<void> => {
  for (const r of [...db.tasks.values()])
    if (r.deleted && (await runner.hasElements(r.id))) void runner.serialize(r.id, () => runner.teardown(r.id, true));
};
