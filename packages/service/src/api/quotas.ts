/**
 * `GET /v1/users/{name}` (admins, and the user itself): the quotas in force, the user's own
 * values and the usage; `PATCH /v1/users/{name}` (admins): the user's own quotas.
 */
import type { FastifyPluginAsync } from 'fastify';
import { notFound } from '@lessl/core';
import { refine, strict } from '../codec.js';
import type { UserRecord } from '../db.js';
import { json, problem, route } from '../http.js';
import { HttpProblem } from '../problem.js';
import { patchQuotas, UserPatchC, UserQuotaViewC } from '../quotas.js';
import * as t from 'io-ts';
import type { RouteDeps } from './deps.js';

const UserParamsC = strict('UserParams', {
  name: refine(t.string, (s) => /^[a-z][a-z0-9_-]{0,31}$/.test(s), 'UserName', { type: 'string' }),
});

/** The view of a user's quotas. */
const viewOf = async (d: RouteDeps, u: UserRecord): Promise<t.TypeOf<typeof UserQuotaViewC>> => ({
  name: u.name,
  admin: u.admin,
  created: u.created,
  exempt: d.quotas.exempt(u),
  quotas: d.quotas.of(u),
  own: { ...(u.quotas ?? {}) },
  usage: await d.quotas.usage(u.name),
});

/** The plugin of the per-user quota routes. */
export const quotaRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'GET',
      url: '/v1/users/:name',
      summary: 'A user: the quotas in force (its own, else the operator’s) and what it holds now (admins, and the user itself)',
      tags: ['users'],
      auth: 'user',
      params: UserParamsC,
      responses: { 200: { description: 'the user', ...json(UserQuotaViewC) }, 404: problem('no such user (or not the caller)') },
      handler: async ({ user, params }) => {
        const u = user.admin || user.name === params.name ? d.db.users.get(params.name) : undefined;
        if (u === undefined) throw new HttpProblem(notFound(`/v1/users/${params.name}`), 404);
        return viewOf(d, u);
      },
    });
    route(scope, {
      method: 'PATCH',
      url: '/v1/users/:name',
      summary:
        'Set a user’s own quotas (admins): a number sets one, null returns it to the operator’s; `quotas: null` all of them',
      tags: ['users'],
      auth: 'admin',
      params: UserParamsC,
      body: UserPatchC,
      responses: { 200: { description: 'the user, changed', ...json(UserQuotaViewC) }, 404: problem('no such user') },
      handler: async ({ params, body }) => {
        const u = await d.db.transact(() => {
          const cur = d.db.users.get(params.name);
          if (cur === undefined || body.quotas === undefined) return { result: cur };
          const next: UserRecord = { ...cur, quotas: patchQuotas(cur, body.quotas) };
          return { change: { users: [next] }, result: next };
        });
        if (u === undefined) throw new HttpProblem(notFound(`/v1/users/${params.name}`), 404);
        return viewOf(d, u);
      },
    });
  };
