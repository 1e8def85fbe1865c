/**
 * The route table helper: each route names its codecs once; they validate the request and
 * generate the route's OpenAPI schema. Handlers get decoded, typed input and the caller.
 */
import * as E from 'fp-ts/lib/Either.js';
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  HTTPMethods,
  onRequestHookHandler,
} from 'fastify';
import type * as t from 'io-ts';
import { notFound, permissionDenied } from '@lessl/core';
import { decodeWith, toJsonSchema, type JsonSchema } from './codec.js';
import { callerOf } from './auth.js';
import type { ServiceDb, UserRecord } from './db.js';
import { HttpProblem, PROBLEM_SCHEMA } from './problem.js';

/** A documented response. */
export interface ResponseDoc {
  readonly description: string;
  readonly schema?: JsonSchema;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a handler gets. */
export interface Ctx<B, Q, P> {
  readonly req: FastifyRequest;
  readonly reply: FastifyReply;
  /** The caller (on routes without auth: nobody, an empty name). */
  readonly user: UserRecord;
  readonly body: B;
  readonly query: Q;
  readonly params: P;
}

/** A route. */
export interface RouteDef<B, Q, P> {
  readonly method: HTTPMethods;
  readonly url: string;
  readonly summary: string;
  readonly tags: readonly string[];
  /** Who may call: anyone, a user with a token, an admin. */
  readonly auth: 'none' | 'user' | 'admin';
  readonly body?: t.Decoder<unknown, B> & t.Mixed;
  /** Or: a codec that only documents the body, and the decoder that validates it (a union decoded by shape). */
  readonly bodyDoc?: t.Mixed;
  readonly bodyDecode?: (u: unknown) => E.Either<HttpProblem, B>;
  /** The body's media types, when not JSON (the OpenAPI document lists them). */
  readonly consumes?: readonly string[];
  readonly query?: t.Decoder<unknown, Q> & t.Mixed;
  readonly params?: t.Decoder<unknown, P> & t.Mixed;
  readonly responses: Readonly<Record<number, ResponseDoc>>;
  readonly handler: (c: Ctx<B, Q, P>) => Promise<unknown>;
}

const problems = (auth: RouteDef<unknown, unknown, unknown>['auth']): Record<number, ResponseDoc> => {
  const r: Record<number, ResponseDoc> = { 400: problem('bad request (InvalidEntry)') };
  if (auth !== 'none') r[401] = problem('no or bad token');
  if (auth !== 'none')
    r[429] = {
      ...problem('a quota or the rate limit: the problem names it, its limit and the usage'),
      headers: { 'retry-after': 'seconds to wait' },
    };
  if (auth === 'admin') r[403] = problem('admins only (PermissionDenied)');
  return r;
};

const responseSchemas = (r: Readonly<Record<number, ResponseDoc>>): Record<string, JsonSchema> =>
  Object.fromEntries(
    Object.entries(r).map(([code, d]) => [
      code,
      {
        description: d.description,
        ...(d.headers === undefined
          ? {}
          : {
              headers: Object.fromEntries(
                Object.entries(d.headers).map(([h, desc]) => [h, { description: desc, schema: { type: 'string' } }]),
              ),
            }),
        ...(d.schema === undefined && d.contentType === undefined
          ? {}
          : { content: { [d.contentType ?? 'application/json']: { schema: d.schema ?? { type: 'string' } } } }),
      },
    ]),
  );

/** A documented JSON response body of codec `s`. */
export const json = (s: t.Mixed): { schema: JsonSchema } => ({ schema: toJsonSchema(s) });
/** A documented problem+json response. */
export const problem = (description: string): ResponseDoc => ({
  description,
  schema: PROBLEM_SCHEMA,
  contentType: 'application/problem+json',
});

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller: set by the `onRequest` hook of the authenticated scope (`authenticated`). */
    lesslUser: UserRecord | null;
  }
}

/** Who calls a route without authentication (its handler has no caller). */
const NOBODY: UserRecord = { name: '', admin: false, created: '' };

const unauthorized = (url: string): HttpProblem =>
  new HttpProblem(permissionDenied(url, '', 'read'), 401, { 'www-authenticate': 'Bearer realm="lessl"' });

/** The `onRequest` hook of admin routes: anyone but an admin is 403. */
const adminOnly: onRequestHookHandler = async (req) => {
  const user = req.lesslUser;
  if (user === null) throw unauthorized(req.url);
  if (!user.admin) throw new HttpProblem(permissionDenied(req.url, user.name, 'create'), 403);
};

/**
 * The authenticated scope: a fastify plugin whose `onRequest` hook names the caller from its
 * bearer token (401 without a known one) before anything of the request is read, and in which
 * `plugins` (one per resource) register their routes.
 */
export const authenticated =
  (db: ServiceDb, plugins: readonly FastifyPluginAsync[]): FastifyPluginAsync =>
  async (scope) => {
    scope.decorateRequest('lesslUser', null);
    scope.addHook('onRequest', async (req) => {
      const user = callerOf(db, req.raw);
      if (user === undefined) throw unauthorized(req.url);
      req.lesslUser = user;
    });
    for (const p of plugins) await scope.register(p);
  };

/** The OpenAPI schema of a route. */
const schemaOf = <B, Q, P>(def: RouteDef<B, Q, P>): Record<string, unknown> => {
  const bodyCodec: t.Mixed | undefined = def.body ?? def.bodyDoc;
  return {
    summary: def.summary,
    tags: [...def.tags],
    ...(def.auth === 'none' ? { security: [] } : {}),
    ...(bodyCodec === undefined ? {} : { body: toJsonSchema(bodyCodec) }),
    ...(def.consumes === undefined ? {} : { consumes: [...def.consumes] }),
    ...(def.query === undefined ? {} : { querystring: toJsonSchema(def.query) }),
    ...(def.params === undefined ? {} : { params: toJsonSchema(def.params) }),
    response: responseSchemas({ ...problems(def.auth), ...def.responses }),
  };
};

/**
 * Registers a route in `scope`: routes with `auth` other than `none` belong in the authenticated
 * scope (its hook names the caller); `admin` routes add a hook that lets admins only.
 */
export const route = <B = undefined, Q = undefined, P = undefined>(scope: FastifyInstance, def: RouteDef<B, Q, P>): void => {
  scope.route({
    method: def.method,
    url: def.url,
    schema: schemaOf(def),
    ...(def.auth === 'admin' ? { onRequest: adminOnly } : {}),
    handler: async (req, reply) => {
      const user = def.auth === 'none' ? NOBODY : req.lesslUser;
      if (user === null) throw unauthorized(req.url);
      const params = decodePart(def.params, req.params, 'path', true);
      const query = decodePart(def.query, req.query ?? {}, 'query', false);
      const body =
        def.bodyDecode !== undefined ? unwrapProblem(def.bodyDecode(req.body)) : decodePart(def.body, req.body, 'body', false);
      return def.handler({ req, reply, user, body, query, params });
    },
  });
};

const unwrapProblem = <A>(e: E.Either<HttpProblem, A>): A => {
  if (E.isLeft(e)) throw e.left;
  return e.right;
};

/** Decodes one part of a request; a bad path parameter is 404 (no such resource), the rest 400. */
const decodePart = <A>(c: t.Decoder<unknown, A> | undefined, u: unknown, what: string, isPath: boolean): A => {
  if (c === undefined) return undefined as A;
  const r = decodeWith(c, u, what);
  if (E.isLeft(r)) throw isPath ? new HttpProblem(notFound(''), 404) : new HttpProblem(r.left, 400);
  return r.right;
};
