/**
 * Hosts over REST (docs/hosts.md): `GET /v1/hosts` (every user: the engines tasks run on,
 * with state and load), `GET /v1/hosts/{name}`, `POST /v1/hosts` (admins: register an engine; it
 * is `spawned` until a health check passes, then `active`) and `DELETE /v1/hosts/{name}` (admins:
 * drain it: no new work, running tasks may finish until `deadlineMs`, then it is `removed`;
 * asynchronous, 202). A backend without hosts (the memory backend) has one pseudo-host `local`
 * and answers `Unsupported` (501) to changes.
 */
import * as t from 'io-ts';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import * as E from 'fp-ts/lib/Either.js';
import { notFound, unsupported, type AnyError } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { DockerBackend, HostInfo } from '@lessl/docker';
import { operationsOf } from './operate.js';
import { describe, IntFromString, refine, str, strict } from './codec.js';
import { json, problem, route } from './http.js';
import { HttpProblem } from './problem.js';

const HostNameC = refine(t.string, (s) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(s), 'HostName', {
  type: 'string',
  pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
});
const HostParamsC = strict('HostParams', { name: HostNameC });
const Nat = refine(t.number, (n) => Number.isSafeInteger(n) && n > 0, 'PositiveInt', { type: 'integer', minimum: 1 });

/** The body of `POST /v1/hosts`. */
export const NewHostC = strict(
  'NewHost',
  { name: HostNameC, url: describe(str(2048, 1), 'unix:///path/docker.sock, tcp://host:2376 (TLS with tls) or https://...') },
  {
    tls: describe(
      strict('HostTls', { ca: str(65536, 1), cert: str(65536, 1), key: str(65536, 1) }),
      'PEM texts or paths on the server',
    ),
    labels: t.record(t.string, t.string),
    capacity: strict('HostCapacity', {}, { slots: Nat, memoryBytes: Nat }),
  },
);
const DrainQueryC = strict(
  'DrainQuery',
  {},
  {
    deadlineMs: describe(
      IntFromString(0, 86_400_000),
      'how long running tasks may go on before they are stopped (default 60000)',
    ),
  },
);

/** A host as the API reports it. */
export const HostViewC = strict(
  'Host',
  {
    name: t.string,
    state: t.string,
    engine: t.string,
    since: t.string,
    labels: t.record(t.string, t.string),
    load: strict('HostLoad', { slots: t.number, memoryBytes: t.number }),
    failures: t.number,
  },
  { capacity: strict('HostCapacityView', {}, { slots: t.number, memoryBytes: t.number }), lastError: t.string },
);
const HostListC = strict('HostList', { items: t.array(HostViewC) });

const view = (h: HostInfo): t.TypeOf<typeof HostViewC> => ({
  name: h.name,
  state: h.state,
  engine: h.endpoint,
  since: h.since,
  labels: { ...h.labels },
  load: { ...h.load },
  failures: h.failures,
  capacity: { ...h.capacity },
  ...(h.lastError === undefined ? {} : { lastError: h.lastError }),
});

/** The view of a backend without Docker engines: one pseudo-host. */
const LOCAL_HOST: t.TypeOf<typeof HostViewC> = {
  name: 'local',
  state: 'active',
  engine: 'memory (no Docker)',
  since: '',
  labels: {},
  load: { slots: 0, memoryBytes: 0 },
  failures: 0,
};

const fail = (e: AnyError): never => {
  throw new HttpProblem(e);
};

/** The hosts as the routes see them: the Docker backend's, or the one pseudo-host of a backend without engines. */
class HostBook {
  constructor(private readonly hosts: DockerBackend['hosts'] | undefined) {}

  list(): t.TypeOf<typeof HostViewC>[] {
    return this.hosts === undefined ? [LOCAL_HOST] : this.hosts.list().map(view);
  }

  /** One host, else 404. */
  one(name: string): t.TypeOf<typeof HostViewC> {
    const h = this.list().find((x) => x.name === name);
    if (h === undefined) throw new HttpProblem(notFound(`/v1/hosts/${name}`), 404);
    return h;
  }

  /** The hosts to change, else 501 (a backend without engines). */
  changeable(): DockerBackend['hosts'] {
    return (
      this.hosts ??
      fail(unsupported('/v1/hosts', 'hosts of a backend without Docker engines', 'run the service on the Docker backend'))
    );
  }
}

/** `GET /v1/hosts`, `GET /v1/hosts/{name}`. */
const readRoutes = (app: FastifyInstance, book: HostBook): void => {
  route(app, {
    method: 'GET',
    url: '/v1/hosts',
    summary: 'The engines the service runs tasks on, with state and load',
    tags: ['hosts'],
    auth: 'user',
    responses: { 200: { description: 'the hosts', ...json(HostListC) } },
    handler: async () => ({ items: book.list() }),
  });
  route(app, {
    method: 'GET',
    url: '/v1/hosts/:name',
    summary: 'One engine',
    tags: ['hosts'],
    auth: 'user',
    params: HostParamsC,
    responses: { 200: { description: 'the host', ...json(HostViewC) }, 404: problem('no such host') },
    handler: async ({ params }) => book.one(params.name),
  });
};

/** `POST /v1/hosts`, `DELETE /v1/hosts/{name}` (admins). */
const changeRoutes = (app: FastifyInstance, book: HostBook): void => {
  route(app, {
    method: 'POST',
    url: '/v1/hosts',
    summary: 'Register an engine (admins only): spawned until a health check passes, then active',
    tags: ['hosts'],
    auth: 'admin',
    body: NewHostC,
    responses: {
      201: { description: 'the host', ...json(HostViewC) },
      409: problem('a host of that name exists'),
      501: problem('the backend has no Docker engines'),
    },
    handler: async ({ body, reply }) => {
      const r = await book.changeable().add(body)();
      if (E.isLeft(r)) fail(r.left);
      reply.code(201).header('location', `/v1/hosts/${body.name}`);
      return book.one(body.name);
    },
  });
  route(app, {
    method: 'DELETE',
    url: '/v1/hosts/:name',
    summary: 'Drain an engine (admins only): no new work; running tasks finish or are stopped after deadlineMs; then removed',
    tags: ['hosts'],
    auth: 'admin',
    params: HostParamsC,
    query: DrainQueryC,
    responses: {
      202: { description: 'draining: follow it at Location', ...json(HostViewC) },
      404: problem('no such host'),
      501: problem('the backend has no Docker engines'),
    },
    handler: async ({ params, query, reply }) => {
      const h = book.changeable();
      book.one(params.name);
      // draining runs in the background: the host reports `draining`, then `removed`
      void h
        .drain(params.name, query.deadlineMs === undefined ? {} : { deadlineMs: query.deadlineMs })()
        .catch(() => undefined);
      reply.code(202).header('location', `/v1/hosts/${params.name}`);
      return book.one(params.name);
    },
  });
};

/** The plugin of the host routes (to register in the authenticated scope). */
export const hostRoutes =
  (b: Backend): FastifyPluginAsync =>
  async (app) => {
    const book = new HostBook(operationsOf(b).hosts);
    readRoutes(app, book);
    changeRoutes(app, book);
  };
