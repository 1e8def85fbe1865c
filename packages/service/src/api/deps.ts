/**
 * What the resource plugins of the API use, and the answers they share.
 */
import type { FastifyReply } from 'fastify';
import { conflict } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { EgressGuard } from '@lessl/docker';
import type { EventCursors } from '../cursors.js';
import type { FunctionDesk } from '../functions.js';
import type { JobRecord, ServiceDb, TaskRecord } from '../db.js';
import type { Metrics } from '../metrics.js';
import type { Policy } from '../plan.js';
import type { QuotaDesk } from '../quotas.js';
import type { Proxy } from '../proxy.js';
import { HttpProblem } from '../problem.js';
import type { JobQueue } from '../queue.js';
import type { Runner } from '../runner.js';
import type { Leaver } from '../users-leave.js';
import { jobLocation, jobView, taskView } from '../views.js';

/** What the routes use. */
export interface RouteDeps {
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly queue: JobQueue;
  readonly runner: Runner;
  readonly policy: Policy;
  /** Where fetches may go: resource `src` URLs are checked at submission (and again when fetched). */
  readonly egress: EgressGuard;
  /** The per-user event ids of `GET /v1/events`. */
  readonly cursors: EventCursors;
  readonly metrics: Metrics;
  /** The functions of the service's users (`backend.functions` on their behalf). */
  readonly functions: FunctionDesk;
  /** Removes a task (kill, containers, volumes, results) and marks it; shared with the reaper. */
  readonly removeTask: (task: string, mark: 'deleted' | 'expired') => Promise<void>;
  /** Runs leave jobs (a user's removal). */
  readonly leaver: Leaver;
  /** The users' quotas: usage, admissions (one at a time per user), refusals. */
  readonly quotas: QuotaDesk;
  /** The proxy to the ports tasks serve. */
  readonly proxy: Proxy;
}

/** The task records of a finished job (those still kept). */
const tasksOf = (db: ServiceDb, j: JobRecord): TaskRecord[] =>
  j.tasks.flatMap((id) => {
    const r = db.tasks.get(id);
    return r === undefined ? [] : [r];
  });

/** Answers a job: 201 with the finished task(s) when `wait` saw it end, else 202 pointing at the job. */
export const answerJob = async (d: RouteDeps, reply: FastifyReply, j: JobRecord, wait: number | undefined): Promise<unknown> => {
  const cur = wait === undefined ? j : ((await d.queue.waitFor(j.id, wait * 1000)) ?? j);
  if (wait !== undefined && cur.state === 'done') {
    const views = await Promise.all(tasksOf(d.db, cur).map((r) => taskView(d.backend, r)));
    reply.code(201).header('location', jobLocation(cur));
    return cur.batch ? { items: views, next: null } : views[0];
  }
  reply.code(202).header('location', `/v1/jobs/${cur.id}`);
  return jobView(cur);
};

/** Answers a retried request (its Idempotency-Key names `j`): the job, or 409 when the body is another. */
export const answerRetry = (
  d: RouteDeps,
  reply: FastifyReply,
  j: JobRecord,
  bodyHash: string | null,
  wait: number | undefined,
): Promise<unknown> => {
  if (j.bodyHash !== bodyHash)
    throw new HttpProblem(
      { ...conflict(`/v1/jobs/${j.id}`, 0, 0), message: 'this Idempotency-Key was used with another request body' },
      409,
    );
  return answerJob(d, reply, j, wait);
};
