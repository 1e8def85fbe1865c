/**
 * The route table helper: each route names its codecs once; they validate the request and
 * generate the route's OpenAPI schema. Handlers get decoded, typed input and the caller.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import type * as t from 'io-ts';
import { notFound, permissionDenied } from '@lessl/core';
import { decodeWith, toJsonSchema, type JsonSchema } from './codec.js';
import { authenticate } from './auth.js';
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
  /** The caller (undefined on routes without auth). */
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
  readonly query?: t.Decoder<unknown, Q> & t.Mixed;
  readonly params?: t.Decoder<unknown, P> & t.Mixed;
  readonly responses: Readonly<Record<number, ResponseDoc>>;
  readonly handler: (c: Ctx<B, Q, P>) => Promise<unknown>;
}

const problems = (auth: RouteDef<unknown, unknown, unknown>['auth']): Record<number, ResponseDoc> => {
  const r: Record<number, ResponseDoc> = { 400: problem('bad request (InvalidEntry)') };
  if (auth !== 'none') r[401] = problem('no or bad token');
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

/** Registers a route. */
export const route = <B = undefined, Q = undefined, P = undefined>(
  app: FastifyInstance,
  db: ServiceDb,
  def: RouteDef<B, Q, P>,
): void => {
  const any = def as unknown as RouteDef<unknown, unknown, unknown>;
  const schema: Record<string, unknown> = {
    summary: def.summary,
    tags: [...def.tags],
    ...(def.auth === 'none' ? { security: [] } : {}),
    ...(def.body === undefined && def.bodyDoc === undefined ? {} : { body: toJsonSchema((def.body ?? def.bodyDoc) as t.Mixed) }),
    ...(def.query === undefined ? {} : { querystring: toJsonSchema(def.query) }),
    ...(def.params === undefined ? {} : { params: toJsonSchema(def.params) }),
    response: responseSchemas({ ...problems(any.auth), ...def.responses }),
  };
  app.route({
    method: def.method,
    url: def.url,
    schema,
    handler: async (req, reply) => {
      let user: UserRecord | undefined;
      if (def.auth !== 'none') {
        user = authenticate(db, req.headers.authorization);
        if (user === undefined)
          throw new HttpProblem(permissionDenied(req.url, '', 'read'), 401, { 'www-authenticate': 'Bearer realm="lessl"' });
        if (def.auth === 'admin' && !user.admin) throw new HttpProblem(permissionDenied(req.url, user.name, 'create'), 403);
      }
      const params = decodePart(def.params, req.params, 'path', true);
      const query = decodePart(def.query, req.query ?? {}, 'query', false);
      const body =
        def.bodyDecode !== undefined ? unwrapProblem(def.bodyDecode(req.body)) : decodePart(def.body, req.body, 'body', false);
      return def.handler({ req, reply, user: user as UserRecord, body, query, params });
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
