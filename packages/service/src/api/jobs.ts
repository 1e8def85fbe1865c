/**
 * `GET /v1/jobs/{id}`: a job's state, 303 to its task(s) once done.
 */
import type { FastifyPluginAsync } from 'fastify';
import { notFound } from '@lessl/core';
import type { JobRecord, ServiceDb, UserRecord } from '../db.js';
import { json, problem, route } from '../http.js';
import { HttpProblem } from '../problem.js';
import { IdParamsC } from '../spec.js';
import { jobLocation, jobView, JobViewC } from '../views.js';

/** The job if the caller may see it (its owner, or an admin), else 404. */
const visibleJob = (db: ServiceDb, u: UserRecord, id: string): JobRecord => {
  const r = db.jobs.get(id);
  if (r === undefined || (r.owner !== u.name && !u.admin)) throw new HttpProblem(notFound(`/v1/jobs/${id}`), 404);
  return r;
};

/** The plugin of the job routes. */
export const jobRoutes =
  (db: ServiceDb): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'GET',
      url: '/v1/jobs/:id',
      summary:
        'A job: its state while queued or running, 303 to its task when done (an invocation job: 200 with its result), its error when failed',
      tags: ['jobs'],
      auth: 'user',
      params: IdParamsC,
      responses: {
        200: { description: 'queued, running, failed or cancelled; an invocation job also when done', ...json(JobViewC) },
        303: { description: 'done: Location is the task (or the batch task list)', headers: { location: 'the result' } },
        404: problem('no such job (or not yours)'),
      },
      handler: async ({ reply, user, params }) => {
        const j = visibleJob(db, user, params.id);
        const loc = jobLocation(j);
        if (loc !== null) reply.code(303).header('location', loc);
        return jobView(j);
      },
    });
  };
