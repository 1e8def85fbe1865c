/**
 * What the operator configures (docs/service.md): the warm pool (`GET|PUT /v1/pool`, or
 * `createServer({ pool })` at start), images preloaded at start (`createServer({ preload })`) and
 * purging least recently used images (`POST /v1/images/purge`). All admin only. These use the
 * Docker backend's `pool`, `preload` and `purge`; a backend without them (the memory backend)
 * answers 501 Unsupported once the request itself is valid.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { FastifyPluginAsync } from 'fastify';
import { LesslError, unsupported, utf8, type AnyError, type ExecutorOptions, type PoolView } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { DockerBackend, PoolProfileRequest, PoolStats, PreloadResult } from '@lessl/docker';
import { decodeWith, describe, int, list, str, strict } from './codec.js';
import { json, problem, route } from './http.js';
import { imageId, type Policy } from './plan.js';
import { HttpProblem } from './problem.js';

/** The backend operations the service uses when the backend has them (the Docker backend does). */
export type Operations = Partial<Pick<DockerBackend, 'pool' | 'purge' | 'refresh' | 'preload' | 'hosts'>>;

/**
 * True when `b` carries the Docker backend's operations (pool, purge, refresh, preload, hosts).
 * The capability manifest (`b.supports`) says what a backend can do; these members are where.
 */
export const hasOperations = (b: Backend): b is DockerBackend =>
  'pool' in b && 'purge' in b && 'refresh' in b && 'preload' in b && 'hosts' in b;

/**
 * The operations `b` has, as its capability manifest says (none on a backend without them, e.g.
 * the memory backend): the pool with `supports.pool`, refresh and preload with
 * `supports.imageSources`, hosts with `supports.hosts`; purge with any of them.
 */
export const operationsOf = (b: Backend): Operations => {
  if (!hasOperations(b)) return {};
  const s = b.supports;
  return {
    ...(s.pool ? { pool: b.pool } : {}),
    ...(s.imageSources ? { refresh: b.refresh, preload: b.preload } : {}),
    ...(s.hosts ? { hosts: b.hosts } : {}),
    ...(s.pool || s.imageSources || s.hosts ? { purge: b.purge } : {}),
  };
};

const ImageNameC = str(512, 1);
/** A warm pool profile as the operator gives it: an image and the limits of the tasks it serves (the policy's defaults for what it leaves out). */
export const PoolProfileC = strict(
  'PoolProfile',
  { image: describe(ImageNameC, 'an image name (or image:// ID)'), min: describe(int(0, 64), 'ready containers kept') },
  {
    max: describe(int(0, 64), 'most ready or starting containers (default min)'),
    idleMs: describe(int(1, 7 * 86_400_000), 'unused this long, the profile drops to zero until its next task'),
    limits: strict('PoolLimits', {}, { memory: int(1 << 20, 2 ** 40), cpus: describe(t.number, 'CPUs'), pids: int(1, 1 << 20) }),
    network: str(64, 1),
  },
);
/** A profile as the operator gives it. */
export type PoolProfile = t.TypeOf<typeof PoolProfileC>;
/** The warm pool configuration: `PUT /v1/pool`, `createServer({ pool })`. */
export const PoolConfigC = strict(
  'PoolConfig',
  { profiles: list(PoolProfileC, 64) },
  { memoryCapBytes: describe(int(0, 2 ** 50), 'memory limits of all pool containers together (default 4 GiB)') },
);
/** The warm pool configuration. */
export type PoolConfig = t.TypeOf<typeof PoolConfigC>;

const Count = t.number;
/** What `GET|PUT /v1/pool` answer: the pool view of `@lessl/core` (checked below), as a codec for the OpenAPI document. */
export const PoolViewC = strict('Pool', {
  profiles: t.array(
    strict(
      'PoolProfileStats',
      {
        key: t.string,
        image: t.string,
        ready: Count,
        starting: Count,
        hits: Count,
        misses: Count,
        failures: Count,
      },
      { runsWith: t.keyof({ agent: null, exec: null }) },
    ),
  ),
  hits: Count,
  misses: Count,
  containers: Count,
  memoryBytes: Count,
  memoryCapBytes: Count,
});

/** The codec and the shared view are one shape. */
const _sameShape = (v: t.TypeOf<typeof PoolViewC>): PoolView => v;
void _sameShape;

/** The body of `POST /v1/images/purge`. */
export const PurgeBodyC = strict(
  'PurgeRequest',
  {},
  {
    unusedForMs: describe(int(0, Number.MAX_SAFE_INTEGER), 'remove images unused for this long'),
    keepBytes: describe(int(0, Number.MAX_SAFE_INTEGER), 'then the least recently used until the rest take at most this'),
    dryRun: describe(t.boolean, 'only say what would be removed'),
  },
);
const PurgeViewC = strict('PurgeReport', {
  removed: t.array(t.string),
  freedBytes: Count,
  inUse: t.array(strict('PurgeKept', { id: t.string, why: t.string })),
  dryRun: t.boolean,
});

/** An image to preload at start: the name and source of `POST /v1/images` (public unless `owner` is given). */
export interface PreloadImage {
  readonly name: string;
  readonly source: Readonly<Record<string, unknown>>;
  /** A user who owns it (default: public). */
  readonly owner?: string;
}

const unsupportedHere = (what: string): HttpProblem =>
  new HttpProblem(
    unsupported('', what, 'this service runs on a backend without it (the memory backend); use the Docker backend'),
  );

/** The backend's profile requests for the operator's profiles (limits the policy's defaults where left out). */
export const profileRequests = (config: PoolConfig, policy: Policy): PoolProfileRequest[] =>
  config.profiles.map((p) => {
    const options: ExecutorOptions = {
      network: p.network ?? 'none',
      memoryBytes: p.limits?.memory ?? policy.defaults.memory,
      cpus: p.limits?.cpus ?? policy.defaults.cpus,
      pids: p.limits?.pids ?? policy.defaults.pids,
    };
    return {
      image: imageId(p.image, policy.imageStore),
      options,
      min: p.min,
      ...(p.max === undefined ? {} : { max: p.max }),
      ...(p.idleMs === undefined ? {} : { idleMs: p.idleMs }),
    };
  });

/** Configures the pool (checked first: a bad configuration is InvalidEntry). */
export const configurePool = async (b: Backend, policy: Policy, u: unknown): Promise<E.Either<AnyError, PoolStats>> => {
  const c = decodeWith(PoolConfigC, u, 'pool');
  if (E.isLeft(c)) return c;
  const pool = operationsOf(b).pool;
  if (pool === undefined) return E.left(unsupported('', 'a warm pool'));
  return pool.configure(profileRequests(c.right, policy), {
    ...(c.right.memoryCapBytes === undefined ? {} : { memoryCapBytes: c.right.memoryCapBytes }),
  })();
};

/** Preloads the operator's images (missing ones are created public, or owned by `owner`); answers what was done per image. */
export const preloadImages = async (
  b: Backend,
  policy: Policy,
  images: readonly PreloadImage[],
): Promise<E.Either<AnyError, PreloadResult[]>> => {
  const preload = operationsOf(b).preload;
  if (images.length === 0) return E.right([]);
  if (preload === undefined) return E.left(unsupported('', 'preloading images'));
  return preload(
    images.map((i) => ({
      id: imageId(i.name, policy.imageStore),
      source: i.source as never,
      ...(i.owner === undefined ? {} : { ro: utf8({ owner: i.owner }) }),
    })),
  )();
};

/** Throws a lessl error (for `createServer`: a bad operator configuration fails the start). */
export const orThrow = <A>(e: E.Either<AnyError, A>): A => {
  if (E.isLeft(e)) throw new LesslError(e.left);
  return e.right;
};

/** The plugin of `GET|PUT /v1/pool` and `POST /v1/images/purge` (admins; to register in the authenticated scope). */
export const operatorRoutes =
  (b: Backend, policy: Policy): FastifyPluginAsync =>
  async (app) => {
    const ops = operationsOf(b);
    route(app, {
      method: 'GET',
      url: '/v1/pool',
      summary: 'The warm pool: per profile its ready and starting containers, hits and misses (admins)',
      tags: ['operator'],
      auth: 'admin',
      responses: { 200: { description: 'the pool', ...json(PoolViewC) }, 501: problem('no warm pool on this backend') },
      handler: async () => {
        if (ops.pool === undefined) throw unsupportedHere('a warm pool');
        return ops.pool.stats();
      },
    });
    route(app, {
      method: 'PUT',
      url: '/v1/pool',
      summary: 'Replace the warm pool’s profiles (admins); answers once the ready containers run',
      tags: ['operator'],
      auth: 'admin',
      body: PoolConfigC,
      responses: {
        200: { description: 'the pool', ...json(PoolViewC) },
        404: problem('a profile names an image that does not exist'),
        501: problem('no warm pool on this backend'),
      },
      handler: async ({ body }) => {
        if (ops.pool === undefined) throw unsupportedHere('a warm pool');
        const r = await configurePool(b, policy, body);
        if (E.isLeft(r)) throw new HttpProblem(r.left);
        return r.right;
      },
    });
    route(app, {
      method: 'POST',
      url: '/v1/images/purge',
      summary:
        'Remove least recently used images nothing uses (admins): those unused for unusedForMs, then the oldest down to keepBytes',
      tags: ['operator'],
      auth: 'admin',
      bodyDoc: PurgeBodyC,
      // no body at all is an empty request: purge nothing but what is stale (and report)
      bodyDecode: (u) =>
        E.mapLeft((e: AnyError) => new HttpProblem(e, 400))(
          decodeWith(PurgeBodyC, u === undefined || u === null ? {} : u, 'body'),
        ),
      responses: { 200: { description: 'what was removed', ...json(PurgeViewC) }, 501: problem('no purge on this backend') },
      handler: async ({ body }) => {
        if (ops.purge === undefined) throw unsupportedHere('purging images');
        const r = await ops.purge(body)();
        if (E.isLeft(r)) throw new HttpProblem(r.left);
        return { ...r.right, dryRun: body.dryRun === true };
      },
    });
  };
