/**
 * Shared routes to a task's port: `POST /v1/tasks/{id}/routes` makes one (`/r/{route}/`, the
 * route shown once: only its SHA-256 is stored), `GET` lists them by handle, `DELETE
 * /v1/tasks/{id}/routes/{handle}` revokes one. A route is a bearer secret; it dies with its task
 * (the database removes a task's routes in the write that ends or removes the task).
 */
import { randomBytes } from 'node:crypto';
import * as t from 'io-ts';
import type { FastifyPluginAsync } from 'fastify';
import { conflict, invalidEntry, notFound } from '@lessl/core';
import { sha256 } from './auth.js';
import { describe, int, strict } from './codec.js';
import { taskLive, type RouteRecord, type ServiceDb, type TaskRecord, type UserRecord } from './db.js';
import { json, problem, route } from './http.js';
import { HttpProblem } from './problem.js';
import { IdParamsC, ResourceIdC } from './spec.js';

/** The most routes one task may have. */
export const MAX_ROUTES = 32;

/** The body of `POST /v1/tasks/{id}/routes`. */
export const NewRouteC = strict('NewRoute', { port: describe(int(1, 65535), 'a port the task declares in its ports') });

/** Path parameters `{id}` and `{handle}`. */
const HandleParamsC = strict('RouteParams', {
  id: ResourceIdC,
  handle: describe(t.string, 'the handle of a route (from the list)'),
});

/** A route as listed (no secret). */
export const RouteItemC = strict('RouteItem', {
  handle: describe(t.string, 'names the route to revoke it (not a secret)'),
  task: t.string,
  port: t.number,
  created: t.string,
});
/** A route as made: the route (shown once) and its URL. */
export const NewRouteViewC = strict('NewRouteView', {
  route: describe(t.string, 'the route: 32 random bytes, base64url; shown once (only its SHA-256 is kept)'),
  url: describe(t.string, 'its path on the service: /r/<route>/'),
  handle: t.string,
  task: t.string,
  port: t.number,
  created: t.string,
});
/** The list of a task's routes. */
export const RouteListC = t.type({ items: t.array(RouteItemC) });
/** A route as listed. */
export type RouteItem = t.TypeOf<typeof RouteItemC>;
/** A route as made (the route shown once). */
export type NewRouteView = t.TypeOf<typeof NewRouteViewC>;

/** The task if the caller may manage its routes (its owner, or an admin), else undefined. */
const ownTask = (db: ServiceDb, u: UserRecord, id: string): TaskRecord | undefined => {
  const r = db.tasks.get(id);
  return r === undefined || r.deleted || (r.owner !== u.name && !u.admin) ? undefined : r;
};

const gone = (id: string): HttpProblem => new HttpProblem(notFound(`/v1/tasks/${id}`), 404);

const item = (r: RouteRecord): RouteItem => ({
  handle: r.handle,
  task: r.task,
  port: r.port,
  created: r.created,
});

/** Makes a route to `port` of task `id`, checked where it is written (the task live, the port declared, the bound). */
const makeRoute = async (db: ServiceDb, user: UserRecord, id: string, port: number): Promise<NewRouteView> => {
  const route = randomBytes(32).toString('base64url');
  const created = new Date().toISOString();
  const handle = `h_${randomBytes(6).toString('hex')}`;
  const res = await db.transact<RouteRecord | HttpProblem>(() => {
    const r = ownTask(db, user, id);
    if (r === undefined || !taskLive(r)) return { result: gone(id) };
    if (!(r.plan.ports ?? []).includes(port))
      return {
        result: new HttpProblem(invalidEntry(`task ${id} does not declare port ${port} in its ports`, '', ['port']), 400),
      };
    if ([...db.routes.values()].filter((x) => x.task === id).length >= MAX_ROUTES)
      return {
        result: new HttpProblem({ ...conflict(`/v1/tasks/${id}`, 0, 0), message: `task ${id} has ${MAX_ROUTES} routes` }, 409),
      };
    const rec: RouteRecord = { hash: sha256(route), handle, task: id, port, owner: r.owner, created };
    return { change: { routes: [rec] }, result: rec };
  });
  if (res instanceof HttpProblem) throw res;
  return { route, url: `/r/${route}/`, ...item(res) };
};

/** The plugin of the route management routes (in the authenticated scope). */
export const shareRoutes =
  (db: ServiceDb): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'POST',
      url: '/v1/tasks/:id/routes',
      summary:
        'Share a port of a task: a route /r/<route>/ that reaches it without a token (a bearer secret: shown once, only its hash is kept; it dies with the task)',
      tags: ['proxy'],
      auth: 'user',
      params: IdParamsC,
      body: NewRouteC,
      responses: {
        201: { description: 'the route (shown once)', ...json(NewRouteViewC) },
        404: problem('no such task (or not yours), or it ended'),
        409: problem(`the task has ${MAX_ROUTES} routes`),
      },
      handler: async ({ reply, user, params, body }) => {
        const made = await makeRoute(db, user, params.id, body.port);
        reply.code(201);
        return made;
      },
    });
    route(scope, {
      method: 'GET',
      url: '/v1/tasks/:id/routes',
      summary: "The task's routes, by handle (the routes themselves are not kept)",
      tags: ['proxy'],
      auth: 'user',
      params: IdParamsC,
      responses: { 200: { description: 'the routes', ...json(RouteListC) }, 404: problem('no such task (or not yours)') },
      handler: async ({ user, params }) => {
        if (ownTask(db, user, params.id) === undefined) throw gone(params.id);
        const items = [...db.routes.values()]
          .filter((r) => r.task === params.id)
          .sort((a, b) => (a.created < b.created ? -1 : 1));
        return { items: items.map(item) };
      },
    });
    route(scope, {
      method: 'DELETE',
      url: '/v1/tasks/:id/routes/:handle',
      summary: 'Revoke a route: its URL answers 404 from now on',
      tags: ['proxy'],
      auth: 'user',
      params: HandleParamsC,
      responses: { 204: { description: 'revoked' }, 404: problem('no such task (or not yours), or no such route') },
      handler: async ({ reply, user, params }) => {
        const ok = await db.transact(() => {
          const r = ownTask(db, user, params.id);
          const rec = [...db.routes.values()].find((x) => x.task === params.id && x.handle === params.handle);
          return r === undefined || rec === undefined ? { result: false } : { change: { delRoutes: [rec.hash] }, result: true };
        });
        if (!ok) throw gone(params.id);
        reply.code(204);
        return undefined;
      },
    });
  };
