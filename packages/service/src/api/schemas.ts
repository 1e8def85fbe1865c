/**
 * `GET /v1/schemas/stack.json`: the JSON Schema of the stack file (`lessl up -f lessl.yml`), for
 * editors and tools; no token needed. The CLI validates with the same object.
 */
import type { FastifyPluginAsync } from 'fastify';
import { route } from '../http.js';
import { STACK_SCHEMA } from '../stack.js';

/** The plugin of the published schemas. */
export const schemaRoutes: FastifyPluginAsync = async (scope) => {
  route(scope, {
    method: 'GET',
    url: '/v1/schemas/stack.json',
    summary: 'The JSON Schema (draft 2020-12) of the stack file of lessl up',
    tags: ['functions'],
    auth: 'none',
    responses: {
      200: {
        description: 'the schema',
        contentType: 'application/schema+json',
        schema: { type: 'object', additionalProperties: true },
      },
    },
    handler: async ({ reply }) => reply.type('application/schema+json').send(JSON.stringify(STACK_SCHEMA)),
  });
};
