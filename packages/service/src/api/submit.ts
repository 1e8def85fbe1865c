/**
 * `POST /v1/tasks`: a task spec (or a batch) planned, checked against what the caller may use
 * (the authorizer answers for images and volumes) and queued as one job.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { invalidEntry } from '@lessl/core';
import { sha256 } from '../auth.js';
import { decodeWith } from '../codec.js';
import type { UserRecord } from '../db.js';
import { as, readElement, volumeId } from '../elements.js';
import { json, problem, route } from '../http.js';
import { imageId, planTask, type FullLimits, type Policy, type TaskPlan } from '../plan.js';
import { HttpProblem } from '../problem.js';
import { inlineBytes } from '../quotas.js';
import { refuseBlocked } from '../resources.js';
import { decodeTaskBody, SubmitQueryC, TaskBodyC, type TaskSpecV1 } from '../spec.js';
import { JobViewC, TaskViewC } from '../views.js';
import { answerJob, answerRetry, type RouteDeps } from './deps.js';

/** The caller's maxima: their own, else the operator's. */
export const maximaOf = (u: UserRecord, p: Policy): FullLimits => ({ ...p.maxima, ...(u.maxima ?? {}) });

/**
 * A request's idempotency: the caller's key (hashed) and the body's hash (`hash`, default: of its
 * JSON), or undefined without the header.
 */
export const idempotencyOf = (
  req: FastifyRequest,
  user: UserRecord,
  hash = (): string => sha256(JSON.stringify(req.body)),
): { key: string; bodyHash: string } | undefined => {
  const key = req.headers['idempotency-key'];
  if (key === undefined) return undefined;
  if (typeof key !== 'string' || key.length === 0 || key.length > 255)
    throw new HttpProblem(invalidEntry('Idempotency-Key must be 1 to 255 characters', '', ['Idempotency-Key']), 400);
  return { key: `${user.name}!${sha256(key)}`, bodyHash: hash() };
};

/** Checks one plan against what the caller may use: the image and volumes (the authorizer answers), the resource URLs. */
const checkPlan = async (d: RouteDeps, user: UserRecord, spec: TaskSpecV1, plan: TaskPlan): Promise<void> => {
  const mine = as(user.name);
  if ((await readElement(d.backend, 'image', plan.image, mine)) === undefined)
    throw new HttpProblem(invalidEntry(`unknown image ${spec.image}`, imageId(spec.image, d.policy.imageStore), ['image']), 400);
  for (const f of plan.files) await refuseBlocked(d.egress, f.src, 'resources.src');
  for (const m of plan.mounts)
    if ((await readElement(d.backend, 'volume', volumeId(m.volume), mine)) === undefined)
      throw new HttpProblem(invalidEntry(`unknown volume ${m.volume}`, '', ['resources.mnt']), 400);
};

/** The plans of a request's specs, each checked; the first bad one is a 400 (naming its index in a batch). */
const plansOf = async (d: RouteDeps, user: UserRecord, specs: readonly TaskSpecV1[]): Promise<TaskPlan[]> => {
  const plans: TaskPlan[] = [];
  for (const [i, spec] of specs.entries()) {
    const p = planTask(spec, d.policy, maximaOf(user, d.policy));
    if (E.isLeft(p))
      throw new HttpProblem(specs.length > 1 ? { ...p.left, message: `spec ${i}: ${p.left.message}` } : p.left, 400);
    await checkPlan(d, user, spec, p.right);
    plans.push(p.right);
  }
  return plans;
};

/** The plugin of `POST /v1/tasks`. */
export const submitRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'POST',
      url: '/v1/tasks',
      summary: 'Submit a task spec (or a batch): 202 and a job; with ?wait=N, 201 and the task when it ends within N s',
      tags: ['tasks'],
      auth: 'user',
      bodyDoc: TaskBodyC,
      bodyDecode: (u) =>
        E.mapLeft((e: ReturnType<typeof invalidEntry>) => new HttpProblem(e, 400))(decodeTaskBody(u, decodeWith)),
      query: SubmitQueryC,
      responses: {
        201: { description: 'the task ended within ?wait (a batch: the page of its tasks)', ...json(TaskViewC) },
        202: { description: 'accepted: follow Location (the job)', ...json(JobViewC), headers: { location: '/v1/jobs/{id}' } },
        409: problem('the Idempotency-Key was used with another body'),
      },
      handler: async ({ req, reply, user, body, query }) => {
        const idem = idempotencyOf(req, user);
        const prior = idem === undefined ? undefined : d.db.idempotency.get(idem.key);
        const j = prior === undefined ? undefined : d.db.jobs.get(prior);
        if (j !== undefined) return answerRetry(d, reply, j, idem?.bodyHash ?? null, query?.wait);
        const plans = await plansOf(d, user, body);
        // the quotas are checked and the job written one admission of the user at a time (a batch: all or none);
        // the key is checked again where it is written: of concurrent retries, one job is accepted
        const ask = { runningTasks: plans.length, queuedJobs: 1, volumeBytes: inlineBytes(plans) };
        const held = (): boolean => idem !== undefined && d.db.idempotency.has(idem.key);
        const submit = () => d.queue.submit(user.name, plans, Array.isArray(req.body), idem);
        const { job, accepted } = await d.quotas.admit(user, ask, submit, held);
        if (!accepted) return answerRetry(d, reply, job, idem?.bodyHash ?? null, query?.wait);
        d.metrics.accepted.inc();
        return answerJob(d, reply, job, query?.wait);
      },
    });
  };
