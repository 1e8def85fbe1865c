/**
 * Hosts over REST (docs/hosts.md, docs/service.md): `GET /v1/hosts` (the engines tasks run on,
 * with state and load), `GET /v1/hosts/{name}`, `POST /v1/hosts` (register an engine; it is
 * `spawned` until a health check passes, then `active`) and `DELETE /v1/hosts/{name}` (drain it:
 * no new work, running tasks may finish until `deadlineMs`, then it is `removed`; asynchronous,
 * 202). An admin's host is shared; a user's host is theirs (the reserved label `lessl.owner`):
 * only their tasks run there, and to everyone else but admins it does not exist (404). Hosts
 * registered here are kept in the service's records and registered again at every start. A
 * backend without hosts (the memory backend) has one pseudo-host `local` and answers
 * `Unsupported` (501) to changes.
 */
import * as t from 'io-ts';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import * as E from 'fp-ts/lib/Either.js';
import { notFound, permissionDenied, unsupported, type AnyError } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import {
  LOCAL_HOST as DEFAULT_ENGINE,
  OWNER_LABEL,
  ownerOfHost,
  type DockerBackend,
  type DockerBackendOptions,
  type HostInfo,
  type HostSpec,
} from '@lessl/docker';
import type { HostRecord, ServiceDb, UserRecord } from './db.js';
import { operationsOf } from './operate.js';
import { describe, IntFromString, refine, str, strict } from './codec.js';
import { json, problem, route } from './http.js';
import { badRequest, HttpProblem } from './problem.js';

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
      'PEM texts (admins may also give paths on the server)',
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

type HostView = t.TypeOf<typeof HostViewC>;
type NewHost = t.TypeOf<typeof NewHostC>;
type Hosts = DockerBackend['hosts'];

/** Whether `u` may see a host: admins all, users the shared hosts and their own. */
const sees = (u: UserRecord, h: Pick<HostView, 'labels'>): boolean => {
  const owner = ownerOfHost(h);
  return u.admin || owner === undefined || owner === u.name;
};

/** What is wrong with a registration by `u`, or undefined: the owner label is the service's; a user names no file or socket of the server. */
const refusalOf = (u: UserRecord, body: NewHost): HttpProblem | undefined => {
  if (body.labels !== undefined && OWNER_LABEL in body.labels)
    return badRequest(`the label ${OWNER_LABEL} is reserved: a user's hosts carry it, set by the service`, [
      'labels',
      OWNER_LABEL,
    ]);
  if (u.admin) return undefined;
  if (!/^(tcp|https):\/\//.test(body.url))
    return badRequest('a user registers an engine by tcp:// or https:// (no socket of the server)', ['url']);
  const paths = Object.entries(body.tls ?? {}).filter(([, v]) => !v.includes('-----BEGIN'));
  if (paths.length > 0)
    return badRequest('a user gives TLS material as PEM texts (no file of the server)', ['tls', paths[0]?.[0] ?? '']);
  return undefined;
};

/** The record of a registration by `u` (a user's carries its owner label). */
const recordOf = (u: UserRecord, body: NewHost): HostRecord => ({
  name: body.name,
  owner: u.admin ? null : u.name,
  url: body.url,
  ...(body.tls === undefined ? {} : { tls: body.tls }),
  labels: { ...(body.labels ?? {}), ...(u.admin ? {} : { [OWNER_LABEL]: u.name }) },
  ...(body.capacity === undefined ? {} : { capacity: body.capacity }),
});

/** The hosts as the routes see them: the Docker backend's, or the one pseudo-host of a backend without engines. */
class HostBook {
  constructor(
    private readonly hosts: Hosts | undefined,
    private readonly db: ServiceDb,
  ) {}

  /** The hosts `u` may see. */
  list(u: UserRecord): HostView[] {
    return this.hosts === undefined
      ? [LOCAL_HOST]
      : this.hosts
          .list()
          .map(view)
          .filter((h) => sees(u, h));
  }

  /** One host `u` may see, else 404 (another user's host is as unknown as one that never was). */
  one(u: UserRecord, name: string): HostView {
    const h = this.list(u).find((x) => x.name === name);
    if (h === undefined) throw new HttpProblem(notFound(`/v1/hosts/${name}`), 404);
    return h;
  }

  /** The hosts to change, else 501 (a backend without engines). */
  changeable(): Hosts {
    return (
      this.hosts ??
      fail(unsupported('/v1/hosts', 'hosts of a backend without Docker engines', 'run the service on the Docker backend'))
    );
  }

  /** Registers an engine for `u` (shared when an admin's) and keeps its record; answers its view. */
  async register(u: UserRecord, body: NewHost): Promise<HostView> {
    const hosts = this.changeable();
    const bad = refusalOf(u, body);
    if (bad !== undefined) throw bad;
    const rec = recordOf(u, body);
    const r = await hosts.add(specOf(rec))();
    if (E.isLeft(r)) fail(r.left);
    await this.db.commit({ hosts: [rec] });
    return this.one(u, body.name);
  }

  /** Drains a host `u` may change (404 otherwise): its record goes first (a restart does not bring it back), the drain runs in the background. */
  async drain(u: UserRecord, name: string, deadlineMs: number | undefined): Promise<HostView> {
    const hosts = this.changeable();
    const h = this.one(u, name);
    if (!u.admin && ownerOfHost(h) !== u.name)
      throw new HttpProblem(permissionDenied(`/v1/hosts/${name}`, u.name, 'delete'), 403);
    await this.db.commit({ delHosts: [name] });
    // draining runs in the background: the host reports `draining`, then `removed`
    void hosts
      .drain(name, deadlineMs === undefined ? {} : { deadlineMs })()
      .catch(() => undefined);
    return this.one(u, name);
  }
}

/** The backend's host spec of a record. */
const specOf = (r: HostRecord): HostSpec => ({
  name: r.name,
  url: r.url,
  ...(r.tls === undefined ? {} : { tls: { ...r.tls } }),
  ...(r.labels === undefined ? {} : { labels: { ...r.labels } }),
  ...(r.capacity === undefined ? {} : { capacity: { ...r.capacity } }),
});

/**
 * The Docker options of the embedded default with the hosts the records keep among its hosts, so
 * that the backend opens with them (its elements living there are reconciled there): after the
 * given `hosts` (the default engine, `local`, when none are given); a name given wins. A `docker`
 * client given is left as it is (`restoreHosts` registers them after the open).
 */
export const withStoredHosts = (o: EmbeddedDocker, stored: Iterable<HostRecord>): EmbeddedDocker => {
  const records = [...stored];
  if (records.length === 0 || o.docker !== undefined) return o;
  const { socketPath, ...rest } = o;
  const given: readonly HostSpec[] = o.hosts ?? [
    { name: DEFAULT_ENGINE, ...(socketPath === undefined ? {} : { url: `unix://${socketPath}` }) },
  ];
  const names = new Set(given.map((h) => h.name));
  return { ...rest, hosts: [...given, ...records.filter((r) => !names.has(r.name)).map(specOf)] };
};

/** The Docker options the service takes for its embedded default. */
type EmbeddedDocker = Omit<DockerBackendOptions, 'registry' | 'authorize' | 'egress'>;

/**
 * Registers again the hosts the records keep (at start): those the backend does not have yet.
 * One that does not answer now is reported and kept: the next start tries it again.
 */
export const restoreHosts = async (b: Backend, db: ServiceDb): Promise<readonly { host: string; error: string }[]> => {
  const hosts = operationsOf(b).hosts;
  if (hosts === undefined) return [];
  const have = new Set(hosts.list().map((h) => h.name));
  const failed: { host: string; error: string }[] = [];
  for (const r of db.hosts.values()) {
    if (have.has(r.name)) continue;
    const added = await hosts.add(specOf(r))();
    if (E.isLeft(added)) failed.push({ host: r.name, error: added.left.message });
  }
  return failed;
};

/** `GET /v1/hosts`, `GET /v1/hosts/{name}`. */
const readRoutes = (app: FastifyInstance, book: HostBook): void => {
  route(app, {
    method: 'GET',
    url: '/v1/hosts',
    summary: 'The engines the caller may run tasks on (shared ones and their own; admins: all), with state and load',
    tags: ['hosts'],
    auth: 'user',
    responses: { 200: { description: 'the hosts', ...json(HostListC) } },
    handler: async ({ user }) => ({ items: book.list(user) }),
  });
  route(app, {
    method: 'GET',
    url: '/v1/hosts/:name',
    summary: 'One engine',
    tags: ['hosts'],
    auth: 'user',
    params: HostParamsC,
    responses: { 200: { description: 'the host', ...json(HostViewC) }, 404: problem("no such host (or another user's)") },
    handler: async ({ user, params }) => book.one(user, params.name),
  });
};

/** `POST /v1/hosts`, `DELETE /v1/hosts/{name}`. */
const changeRoutes = (app: FastifyInstance, book: HostBook): void => {
  route(app, {
    method: 'POST',
    url: '/v1/hosts',
    summary:
      "Register an engine: an admin's is shared, a user's runs only that user's tasks; spawned until a health check passes, then active",
    tags: ['hosts'],
    auth: 'user',
    body: NewHostC,
    responses: {
      201: { description: 'the host', ...json(HostViewC) },
      409: problem('a host of that name exists'),
      501: problem('the backend has no Docker engines'),
    },
    handler: async ({ user, body, reply }) => {
      const v = await book.register(user, body);
      reply.code(201).header('location', `/v1/hosts/${body.name}`);
      return v;
    },
  });
  route(app, {
    method: 'DELETE',
    url: '/v1/hosts/:name',
    summary:
      'Drain an engine (its owner, or an admin): no new work; running tasks finish or are stopped after deadlineMs; then removed',
    tags: ['hosts'],
    auth: 'user',
    params: HostParamsC,
    query: DrainQueryC,
    responses: {
      202: { description: 'draining: follow it at Location', ...json(HostViewC) },
      403: problem('a shared host: admins only'),
      404: problem("no such host (or another user's)"),
      501: problem('the backend has no Docker engines'),
    },
    handler: async ({ user, params, query, reply }) => {
      const v = await book.drain(user, params.name, query.deadlineMs);
      reply.code(202).header('location', `/v1/hosts/${params.name}`);
      return v;
    },
  });
};

/** The plugin of the host routes (to register in the authenticated scope). */
export const hostRoutes =
  (b: Backend, db: ServiceDb): FastifyPluginAsync =>
  async (app) => {
    const book = new HostBook(operationsOf(b).hosts, db);
    readRoutes(app, book);
    changeRoutes(app, book);
  };
