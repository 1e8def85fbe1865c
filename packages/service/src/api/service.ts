/**
 * The routes without authentication: `GET /healthz` and `GET /metrics`.
 */
import * as t from 'io-ts';
import type { FastifyPluginAsync } from 'fastify';
import type { ServiceDb } from '../db.js';
import { json, route } from '../http.js';
import type { Metrics } from '../metrics.js';
import type { JobQueue } from '../queue.js';

/** The plugin of the service's own routes (no token needed). */
export const serviceRoutes =
  (db: ServiceDb, queue: JobQueue, metrics: Metrics): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'GET',
      url: '/healthz',
      summary: 'Liveness: the queue and the registry answer',
      tags: ['service'],
      auth: 'none',
      responses: {
        200: { description: 'healthy', ...json(t.type({ status: t.literal('ok'), queued: t.number, running: t.number })) },
      },
      handler: async () => ({ status: 'ok' as const, queued: db.queue.length, running: queue.active }),
    });
    route(scope, {
      method: 'GET',
      url: '/metrics',
      summary: 'Prometheus metrics',
      tags: ['service'],
      auth: 'none',
      responses: { 200: { description: 'Prometheus text format', contentType: 'text/plain' } },
      handler: async ({ reply }) => {
        reply.header('content-type', metrics.prometheus.contentType);
        return metrics.prometheus.metrics();
      },
    });
  };
