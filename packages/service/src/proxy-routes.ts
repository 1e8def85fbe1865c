/**
 * The proxy's routes: `/v1/tasks/{id}/ports/{port}[/...]` in the authenticated scope (the
 * owner's token, or an admin's), `/r/{route}[/...]` without a token, and the server's `upgrade`
 * listener for both. Bodies are not parsed here: the proxy reads the raw request stream.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import type { ServiceDb } from './db.js';
import { PROBLEM_SCHEMA } from './problem.js';
import { NOT_FOUND, ownerTarget, routeTarget, type Proxy, type Target } from './proxy.js';
import { upgradeListener } from './proxy-upgrade.js';

/** The methods proxied (every method HTTP/1.1 clients use). */
const METHODS: HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: PROBLEM_SCHEMA } },
});

/** The OpenAPI description of a proxied path. */
const schemaOf = (summary: string, params: Record<string, unknown>, auth: boolean, hide: boolean) => ({
  summary,
  tags: ['proxy'],
  hide,
  ...(auth ? {} : { security: [] }),
  params: { type: 'object', properties: params },
  response: {
    200: { description: "the daemon's response, streamed as it comes (any status it answers)" },
    ...(auth ? { 401: problem('no or bad token') } : {}),
    404: problem('no such task port (unknown, not yours, not running, not declared), or no such route'),
    413: problem('the request body is past the policy bound (maxProxyBodyBytes)'),
    502: problem('nothing listens on the port, or the daemon closed the connection before answering'),
    504: problem('the daemon did not answer within the proxy timeout'),
  },
});

/** Takes every body as it comes: the proxy streams it to the daemon unread. */
const rawBodies = (scope: FastifyInstance): void => {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
};

/** Registers the bare path, the one with a trailing slash and anything below it. */
const proxied = (
  scope: FastifyInstance,
  base: string,
  doc: (hide: boolean) => Record<string, unknown>,
  target: (req: FastifyRequest) => Target | undefined,
  proxy: Proxy,
): void => {
  const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    reply.hijack();
    const t = target(req);
    if (t === undefined) return proxy.refuse(reply.raw, base.startsWith('/r/') ? 'route' : 'owner', performance.now(), NOT_FOUND);
    await proxy.http(req.raw, reply.raw, t);
  };
  scope.route({ method: METHODS, url: base, schema: doc(true), handler });
  scope.route({ method: METHODS, url: `${base}/*`, schema: doc(false), handler });
};

const ID = { id: { type: 'string' }, port: { type: 'integer', minimum: 1, maximum: 65535 } };

/** `/v1/tasks/{id}/ports/{port}/...`: for the authenticated scope (its hook names the caller). */
export const ownerProxyRoutes =
  (db: ServiceDb, proxy: Proxy): FastifyPluginAsync =>
  async (scope) => {
    rawBodies(scope);
    const summary =
      "Proxy to a port the task serves (every method; WebSocket upgrades too): the path after the prefix and the query go to the daemon; the caller's Authorization header never does";
    proxied(
      scope,
      '/v1/tasks/:id/ports/:port',
      (hide) => schemaOf(summary, { ...ID, '*': { type: 'string' } }, true, hide),
      (req) => (req.lesslUser === null ? undefined : ownerTarget(db, req.lesslUser, req.raw.url ?? '')),
      proxy,
    );
  };

/** `/r/{route}/...` (no token), and the server's upgrade listener; connections into tasks close with the server. */
export const sharedProxyRoutes =
  (db: ServiceDb, proxy: Proxy): FastifyPluginAsync =>
  async (scope) => {
    rawBodies(scope);
    const summary =
      'Proxy to a task port through a shared route (no token: the route is the secret; every method, WebSocket upgrades too)';
    proxied(
      scope,
      '/r/:route',
      (hide) => schemaOf(summary, { route: { type: 'string' }, '*': { type: 'string' } }, false, hide),
      (req) => routeTarget(db, req.raw.url ?? ''),
      proxy,
    );
    scope.server.on('upgrade', upgradeListener(proxy, db));
    scope.addHook('preClose', async () => proxy.closeAll());
  };
