/**
 * The function routes: `PUT|GET|DELETE /v1/functions/{name}`, `GET /v1/functions`, `POST
 * /v1/functions/{name}/invoke` (the request body is the process's stdin, the answer its stdout;
 * `?async`: 202 and a job) and `GET /v1/functions/{name}/logs`. What a user may see and do is
 * the function desk's (functions.ts).
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { UserRecord } from '../db.js';
import { annotate, describe, strict } from '../codec.js';
import {
  FunctionBodyC,
  FunctionListC,
  FunctionParamsC,
  FunctionViewC,
  invocationHeaders,
  InvocationLogC,
  logView,
} from '../functions.js';
import { json, problem, route } from '../http.js';
import { badRequest, type HttpProblem } from '../problem.js';
import { JobViewC } from '../views.js';
import { answerJob, answerRetry, type RouteDeps } from './deps.js';
import { idempotencyOf, maximaOf } from './submit.js';

/** A flag carried in a query: present without a value (`?async`), `true`/`1`, or `false`/`0`. */
const FlagC = annotate(
  new t.Type<boolean, string, unknown>(
    'Flag',
    (u): u is boolean => typeof u === 'boolean',
    (u, c) =>
      u === '' || u === 'true' || u === '1' ? t.success(true) : u === 'false' || u === '0' ? t.success(false) : t.failure(u, c),
    String,
  ),
  { type: 'boolean' },
);

const InvokeQueryC = strict(
  'InvokeQuery',
  {},
  { async: describe(FlagC, 'answer 202 with a job at once (`?async` or `?async=true`); the job holds the result') },
);

/** The headers of an invocation's answer, documented. */
const INVOKE_HEADERS = {
  'x-lessl-exit-code': 'the exit code (empty when the process did not exit by itself)',
  'x-lessl-reason': 'exited, deadline, killed, lost or not-found',
  'x-lessl-duration-ms': 'milliseconds the invocation took',
  'x-lessl-stderr-bytes': 'bytes the process wrote to stderr (see GET /v1/functions/{name}/logs)',
  'x-lessl-cold': 'true when a container was started for it',
  'x-lessl-invocation': "the invocation's ID (in its invoked event and the function's log)",
  'x-lessl-version': 'the version of the function that ran',
  'x-lessl-truncated': 'true when output past limits.output was dropped',
};

/** An invocation's request body: bytes (none: empty stdin). */
const inputOf = (u: unknown): E.Either<HttpProblem, Buffer> =>
  u === undefined || u === null
    ? E.right(Buffer.alloc(0))
    : Buffer.isBuffer(u)
      ? E.right(u)
      : E.left(badRequest('the body must be bytes', ['body']));

/**
 * `?async`: queues an invocation job (202 and the job). With an `Idempotency-Key`, a retry (same
 * function and body) answers the job the key names; the same key with another body is 409.
 */
const invokeLater = async (
  d: RouteDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  user: UserRecord,
  name: string,
  input: Buffer,
): Promise<unknown> => {
  const idem = idempotencyOf(req, user, () => createHash('sha256').update(`${name}\n`).update(input).digest('hex'));
  const prior = idem === undefined ? undefined : d.db.jobs.get(d.db.idempotency.get(idem.key) ?? '');
  if (prior !== undefined) return answerRetry(d, reply, prior, idem?.bodyHash ?? null, undefined);
  await d.functions.visible(user, name);
  const call = { function: name, input: input.toString('base64'), admin: user.admin };
  const held = (): boolean => idem !== undefined && d.db.idempotency.has(idem.key);
  const submit = () => d.queue.submitInvoke(user.name, call, idem);
  const { job, accepted } = await d.quotas.admit(user, { queuedJobs: 1 }, submit, held);
  return accepted ? answerJob(d, reply, job, undefined) : answerRetry(d, reply, job, idem?.bodyHash ?? null, undefined);
};

/** `PUT /v1/functions/{name}`, `DELETE /v1/functions/{name}`. */
const changeRoutes = (scope: FastifyInstance, d: RouteDeps): void => {
  route(scope, {
    method: 'PUT',
    url: '/v1/functions/:name',
    summary: "Create or update the caller's function: 201 when made, 200 when updated (or unchanged: same version)",
    tags: ['functions'],
    auth: 'user',
    params: FunctionParamsC,
    body: FunctionBodyC,
    responses: {
      200: { description: 'updated (version + 1) or unchanged', ...json(FunctionViewC) },
      201: { description: 'created (version 1)', ...json(FunctionViewC), headers: { location: '/v1/functions/{name}' } },
      403: problem('public: true by a non-admin'),
      409: problem('another user owns a function of that name'),
    },
    handler: async ({ reply, user, params, body }) => {
      const { view, created } = await d.functions.deploy(user, params.name, body, maximaOf(user, d.policy));
      if (created) reply.code(201).header('location', `/v1/functions/${params.name}`);
      return view;
    },
  });
  route(scope, {
    method: 'DELETE',
    url: '/v1/functions/:name',
    summary: "Remove the caller's function: invocations under way are killed, its containers removed",
    tags: ['functions'],
    auth: 'user',
    params: FunctionParamsC,
    responses: {
      204: { description: 'removed' },
      403: problem('a public function of another user, by a non-admin'),
      404: problem('no such function (or not yours)'),
    },
    handler: async ({ reply, user, params }) => {
      await d.functions.remove(user, params.name);
      return reply.code(204).send();
    },
  });
};

/** `GET /v1/functions`, `GET /v1/functions/{name}`, `GET /v1/functions/{name}/logs`. */
const readRoutes = (scope: FastifyInstance, d: RouteDeps): void => {
  route(scope, {
    method: 'GET',
    url: '/v1/functions',
    summary: 'The functions the caller may invoke: its own and the public ones (admins: all)',
    tags: ['functions'],
    auth: 'user',
    responses: { 200: { description: 'by name', ...json(FunctionListC) } },
    handler: async ({ user }) => ({ functions: await d.functions.list(user) }),
  });
  route(scope, {
    method: 'GET',
    url: '/v1/functions/:name',
    summary: 'A function: its definition with defaults applied, owner, version',
    tags: ['functions'],
    auth: 'user',
    params: FunctionParamsC,
    responses: { 200: { description: 'the function', ...json(FunctionViewC) }, 404: problem('no such function (or not yours)') },
    handler: async ({ user, params }) => d.functions.get(user, params.name),
  });
  route(scope, {
    method: 'GET',
    url: '/v1/functions/:name/logs',
    summary: "A function's newest invocations, newest first, with the tail of their stderr (its owner and admins)",
    tags: ['functions'],
    auth: 'user',
    params: FunctionParamsC,
    responses: {
      200: { description: 'the invocations', ...json(InvocationLogC) },
      403: problem('a public function of another user'),
      404: problem('no such function (or not yours)'),
    },
    handler: async ({ user, params }) => logView(await d.functions.logs(user, params.name)),
  });
};

/** `POST /v1/functions/{name}/invoke`, in a scope that takes any body as bytes (at most `policy.maxInvokeBytes`). */
const invokeRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: d.policy.maxInvokeBytes }, (_req, body, done) =>
      done(null, body),
    );
    route(scope, {
      method: 'POST',
      url: '/v1/functions/:name/invoke',
      summary: 'Invoke a function: the request body is its stdin, the answer its stdout; exit code, reason, duration in headers',
      tags: ['functions'],
      auth: 'user',
      params: FunctionParamsC,
      query: InvokeQueryC,
      consumes: ['application/octet-stream', '*/*'],
      bodyDoc: describe(t.string, 'the bytes of its stdin (any content type)'),
      bodyDecode: inputOf,
      responses: {
        200: {
          description: 'it ran (whatever its exit code): the body is its stdout',
          contentType: 'application/octet-stream',
          schema: { type: 'string', format: 'binary' },
          headers: INVOKE_HEADERS,
        },
        202: {
          description: '?async: the job (its result once done); an Idempotency-Key retry answers the same job',
          ...json(JobViewC),
          headers: { location: '/v1/jobs/{id}' },
        },
        409: problem('?async: the Idempotency-Key was used with another function or body'),
        404: problem('no such function (or not yours)'),
        413: problem('the body is larger than the invocation limit'),
      },
      handler: async ({ req, reply, user, params, query, body }) => {
        if (query?.async === true) return invokeLater(d, req, reply, user, params.name, body);
        // a client that goes away kills its invocation
        const ac = new AbortController();
        reply.raw.on('close', () => void (reply.raw.writableFinished ? undefined : ac.abort()));
        const inv = await d.functions.invoke(user, params.name, body, ac.signal);
        reply.code(200).headers(invocationHeaders(inv)).type('application/octet-stream');
        return Buffer.from(inv.stdout);
      },
    });
  };

/** The plugin of the function routes. */
export const functionRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    changeRoutes(scope, d);
    readRoutes(scope, d);
    await scope.register(invokeRoutes(d));
  };
