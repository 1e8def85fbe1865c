/**
 * The REST API under /v1, plus /healthz, /metrics and /openapi.json: one fastify plugin per
 * resource, the authenticated ones inside one scope whose `onRequest` hook names the caller.
 */
import type { FastifyInstance } from 'fastify';
import { authenticated } from './http.js';
import { hostRoutes } from './hosts.js';
import { imageRoutes, type ImageRoutes } from './images.js';
import { operatorRoutes } from './operate.js';
import { ownerProxyRoutes, sharedProxyRoutes } from './proxy-routes.js';
import { shareRoutes } from './routes-share.js';
import type { RouteDeps } from './api/deps.js';
import { eventRoutes } from './api/events.js';
import { functionRoutes } from './api/functions.js';
import { jobRoutes } from './api/jobs.js';
import { quotaRoutes } from './api/quotas.js';
import { schemaRoutes } from './api/schemas.js';
import { serviceRoutes } from './api/service.js';
import { submitRoutes } from './api/submit.js';
import { taskRoutes } from './api/tasks.js';
import { userRoutes } from './api/users.js';
import { leaveRoutes } from './users-leave.js';

export type { RouteDeps } from './api/deps.js';

/** Registers every route; answers what the image routes tell the metrics. */
export const registerRoutes = async (app: FastifyInstance, d: RouteDeps): Promise<ImageRoutes> => {
  const images = imageRoutes(d.backend, d.policy, d.egress, d.quotas);
  await app.register(
    authenticated(d.db, [
      submitRoutes(d),
      jobRoutes(d.db),
      taskRoutes(d),
      eventRoutes(d),
      userRoutes(d.db),
      leaveRoutes(d.leaver, d.queue),
      quotaRoutes(d),
      images.plugin,
      operatorRoutes(d.backend, d.policy),
      hostRoutes(d.backend, d.db),
      functionRoutes(d),
      shareRoutes(d.db),
      ownerProxyRoutes(d.db, d.proxy),
    ]),
  );
  await app.register(sharedProxyRoutes(d.db, d.proxy));
  await app.register(serviceRoutes(d.db, d.queue, d.metrics));
  await app.register(schemaRoutes);
  return images.book;
};
