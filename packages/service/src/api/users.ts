/**
 * `POST /v1/users` and `GET /v1/users` (admins only); `GET /v1/whoami` (the caller).
 */
import * as t from 'io-ts';
import type { FastifyPluginAsync } from 'fastify';
import { nameCollision } from '@lessl/core';
import { addUser } from '../auth.js';
import type { ServiceDb } from '../db.js';
import { json, problem, route } from '../http.js';
import { HttpProblem } from '../problem.js';
import { NewUserC } from '../spec.js';
import { WhoamiC } from '../stack.js';

/** The plugin of the user routes. */
export const userRoutes =
  (db: ServiceDb): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'POST',
      url: '/v1/users',
      summary: 'Add a user (admins only): answers its bearer token, once',
      tags: ['users'],
      auth: 'admin',
      body: NewUserC,
      responses: {
        201: { description: 'the user and its token', ...json(t.type({ name: t.string, admin: t.boolean, token: t.string })) },
        409: problem('the user exists'),
      },
      handler: async ({ reply, body }) => {
        const admin = body.admin === true;
        const created = new Date().toISOString();
        const token = await addUser(db, {
          name: body.name,
          admin,
          created,
          ...(body.maxima === undefined ? {} : { maxima: body.maxima }),
        });
        if (token === undefined) throw new HttpProblem({ ...nameCollision(body.name), message: `user ${body.name} exists` }, 409);
        reply.code(201).header('location', `/v1/users/${body.name}`);
        return { name: body.name, admin, token };
      },
    });
    route(scope, {
      method: 'GET',
      url: '/v1/users',
      summary: 'The users (admins only)',
      tags: ['users'],
      auth: 'admin',
      responses: {
        200: { description: 'the users', ...json(t.array(t.type({ name: t.string, admin: t.boolean, created: t.string }))) },
      },
      handler: async () => [...db.users.values()].map((u) => ({ name: u.name, admin: u.admin, created: u.created })),
    });
    route(scope, {
      method: 'GET',
      url: '/v1/whoami',
      summary: 'The caller: its user name and whether it is an admin',
      tags: ['users'],
      auth: 'user',
      responses: { 200: { description: 'the caller', ...json(WhoamiC) } },
      handler: async ({ user }) => ({ name: user.name, admin: user.admin }),
    });
  };
