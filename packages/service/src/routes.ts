/**
 * The REST API under /v1, plus /healthz, /metrics and /openapi.json.
 */
import { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { conflict, eventToJson, invalidEntry, kindOfKey, LesslError, notFound, type LesslEvent } from '@lessl/core';
import type { Backend } from '@lessl/level';
import type { EgressGuard } from '@lessl/docker';
import { refuseBlocked } from './resources.js';
import type { EventCursors } from './cursors.js';
import { addUser, sha256 } from './auth.js';
import { decodeWith } from './codec.js';
import type { JobRecord, ServiceDb, TaskRecord, UserRecord } from './db.js';
import { json, problem, route } from './http.js';
import type { Metrics } from './metrics.js';
import { imageId, planTask, type FullLimits, type Policy, type TaskPlan } from './plan.js';
import { HttpProblem, problemOf } from './problem.js';
import type { JobQueue } from './queue.js';
import type { Runner } from './runner.js';
import { as, elementsOf, isPublic, readElement, SERVICE, serviceTaskOf, volumeId } from './elements.js';
import {
  decodeTaskBody,
  EventsQueryC,
  ExecBodyC,
  IdParamsC,
  ListQueryC,
  LogsQueryC,
  NewUserC,
  SubmitQueryC,
  TaskBodyC,
} from './spec.js';
import { JobViewC, jobLocation, jobView, TaskPageC, taskView, TaskViewC } from './views.js';

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
  /** Removes a task (kill, containers, volumes, results) and marks it; shared with the reaper. */
  readonly removeTask: (task: string, mark: 'deleted' | 'expired') => Promise<void>;
}

/** The caller's maxima: their own, else the operator's. */
const maximaOf = (u: UserRecord, p: Policy): FullLimits => ({ ...p.maxima, ...(u.maxima ?? {}) });

/** The task record if the caller may see it (its owner, or an admin), else 404 (no existence leak). */
const visibleTask = (db: ServiceDb, u: UserRecord, id: string): TaskRecord => {
  const r = db.tasks.get(id);
  if (r === undefined || r.deleted || (r.owner !== u.name && !u.admin)) throw new HttpProblem(notFound(`/v1/tasks/${id}`), 404);
  return r;
};
const visibleJob = (db: ServiceDb, u: UserRecord, id: string): JobRecord => {
  const r = db.jobs.get(id);
  if (r === undefined || (r.owner !== u.name && !u.admin)) throw new HttpProblem(notFound(`/v1/jobs/${id}`), 404);
  return r;
};

/**
 * Where an event stream starts: after the event a `Last-Event-ID` (else `?since=`) names, `0`
 * for the beginning, undefined for live from now. An id this user was not given is a 400.
 */
const sinceOf = (cursors: EventCursors, user: string, header: unknown, query: string | undefined): number | undefined => {
  const [from, key] = typeof header === 'string' && header !== '' ? [header, 'Last-Event-ID'] : [query, 'since'];
  if (from === undefined) return undefined;
  const seq = from === '0' ? 0 : cursors.decode(user, from);
  if (seq === undefined) throw new HttpProblem(invalidEntry(`${key} is not an event id of this stream`, '', [key]), 400);
  return seq;
};

/** States from which `PUT` with `start: true` creates a daemon's container again. */
const RESTARTABLE = new Set(['exited', 'failed', 'killed', 'lost', 'expired']);

/** Registers every route. */
export const registerRoutes = (app: FastifyInstance, d: RouteDeps): void => {
  const { db, backend: b, queue } = d;

  /** Answers a retried request (its Idempotency-Key names `j`): the job, or 409 when the body is another. */
  const answerRetry = (
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
    return answerJob(reply, j, wait);
  };

  /** Answers a job: 201 with the finished task(s) when `wait` saw it end, else 202 pointing at the job. */
  const answerJob = async (reply: FastifyReply, j: JobRecord, wait: number | undefined): Promise<unknown> => {
    const cur = wait === undefined ? j : ((await queue.waitFor(j.id, wait * 1000)) ?? j);
    if (wait !== undefined && cur.state === 'done') {
      const views = await Promise.all(cur.tasks.map((id) => taskView(b, db.tasks.get(id) as TaskRecord)));
      reply.code(201).header('location', jobLocation(cur));
      return cur.batch ? { items: views, next: null } : views[0];
    }
    reply.code(202).header('location', `/v1/jobs/${cur.id}`);
    return jobView(cur);
  };

  route(app, db, {
    method: 'POST',
    url: '/v1/tasks',
    summary: 'Submit a task spec (or a batch): 202 and a job; with ?wait=N, 201 and the task when it ends within N s',
    tags: ['tasks'],
    auth: 'user',
    bodyDoc: TaskBodyC,
    bodyDecode: (u) => E.mapLeft((e: ReturnType<typeof invalidEntry>) => new HttpProblem(e, 400))(decodeTaskBody(u, decodeWith)),
    query: SubmitQueryC,
    responses: {
      201: { description: 'the task ended within ?wait (a batch: the page of its tasks)', ...json(TaskViewC) },
      202: { description: 'accepted: follow Location (the job)', ...json(JobViewC), headers: { location: '/v1/jobs/{id}' } },
      409: problem('the Idempotency-Key was used with another body'),
    },
    handler: async ({ req, reply, user, body, query }) => {
      const key = req.headers['idempotency-key'];
      let idem: { key: string; bodyHash: string } | undefined;
      if (key !== undefined) {
        if (typeof key !== 'string' || key.length === 0 || key.length > 255)
          throw new HttpProblem(invalidEntry('Idempotency-Key must be 1 to 255 characters', '', ['Idempotency-Key']), 400);
        idem = { key: `${user.name}!${sha256(key)}`, bodyHash: sha256(JSON.stringify(req.body)) };
        const prior = db.idempotency.get(idem.key);
        const j = prior === undefined ? undefined : db.jobs.get(prior);
        if (j !== undefined) return answerRetry(reply, j, idem.bodyHash, query?.wait);
      }
      const plans: TaskPlan[] = [];
      for (const [i, spec] of body.entries()) {
        const p = planTask(spec, d.policy, maximaOf(user, d.policy));
        if (E.isLeft(p))
          throw new HttpProblem(body.length > 1 ? { ...p.left, message: `spec ${i}: ${p.left.message}` } : p.left, 400);
        // the caller's own reads: the authorizer answers whether the image (own or public) and volumes are theirs
        if ((await readElement(b, 'image', p.right.image, as(user.name))) === undefined)
          throw new HttpProblem(
            invalidEntry(`unknown image ${spec.image}`, imageId(spec.image, d.policy.imageStore), ['image']),
            400,
          );
        for (const f of p.right.files) await refuseBlocked(d.egress, f.src, 'resources.src');
        for (const m of p.right.mounts) {
          if ((await readElement(b, 'volume', volumeId(m.volume), as(user.name))) === undefined)
            throw new HttpProblem(invalidEntry(`unknown volume ${m.volume}`, '', ['resources.mnt']), 400);
        }
        plans.push(p.right);
      }
      // the key is checked again where it is written: of concurrent retries, one job is accepted
      const { job, accepted } = await queue.submit(user.name, plans, Array.isArray(req.body), idem);
      if (!accepted) return answerRetry(reply, job, idem?.bodyHash ?? null, query?.wait);
      d.metrics.accepted.inc();
      return answerJob(reply, job, query?.wait);
    },
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/jobs/:id',
    summary: 'A job: its state while queued or running, 303 to its task when done, its error when failed',
    tags: ['jobs'],
    auth: 'user',
    params: IdParamsC,
    responses: {
      200: { description: 'queued, running, failed or cancelled', ...json(JobViewC) },
      303: { description: 'done: Location is the task (or the batch task list)', headers: { location: 'the result' } },
      404: problem('no such job (or not yours)'),
    },
    handler: async ({ reply, user, params }) => {
      const j = visibleJob(db, user, params.id);
      const loc = jobLocation(j);
      if (loc !== null) {
        reply.code(303).header('location', loc);
        return jobView(j);
      }
      return jobView(j);
    },
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/tasks',
    summary: "The caller's tasks, newest first, filtered and paginated",
    tags: ['tasks'],
    auth: 'user',
    query: ListQueryC,
    responses: { 200: { description: 'a page; `next` is the cursor of the next one', ...json(TaskPageC) } },
    handler: async ({ user, query }) => {
      const q = query ?? {};
      const all = [...db.tasks.values()]
        .filter((r) => !r.deleted && r.owner === user.name)
        .filter((r) => (q.state === undefined || r.state === q.state) && (q.job === undefined || r.job === q.job))
        .filter((r) => q.name === undefined || r.plan.name === q.name)
        .sort((a, b2) => (a.created === b2.created ? (a.id < b2.id ? 1 : -1) : a.created < b2.created ? 1 : -1));
      const start = q.cursor === undefined ? 0 : all.findIndex((r) => r.id === q.cursor) + 1;
      const limit = q.limit ?? 50;
      const page = all.slice(start, start + limit);
      return {
        items: await Promise.all(page.map((r) => taskView(b, r))),
        next: start + limit < all.length ? (page.at(-1)?.id ?? null) : null,
      };
    },
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/tasks/:id',
    summary: 'A task: state, per-command exit codes, output (or its size), container, created, expires',
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    responses: { 200: { description: 'the task', ...json(TaskViewC) }, 404: problem('no such task (or not yours)') },
    handler: async ({ user, params }) => taskView(b, visibleTask(db, user, params.id)),
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/tasks/:id/logs',
    summary: "The task's output, command after command; with follow=true streamed until the task ends",
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    query: LogsQueryC,
    responses: {
      200: {
        description: 'the output (stdout and stderr as they arrived)',
        contentType: 'text/plain',
        schema: { type: 'string' },
      },
      404: problem('no such task (or not yours)'),
    },
    handler: async ({ req, reply, user, params, query }) => {
      const r = visibleTask(db, user, params.id);
      const ac = new AbortController();
      req.raw.on('close', () => ac.abort());
      reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store');
      return Readable.from(logStream(b, db, r.id, query?.follow === true, ac.signal));
    },
  });

  route(app, db, {
    method: 'PUT',
    url: '/v1/tasks/:id',
    summary:
      'Run more commands in a daemon task (exec); with start: true a daemon that is not running is created again from its stored spec first. 202 and a job, or 201 with ?wait',
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    query: SubmitQueryC,
    body: ExecBodyC,
    responses: {
      201: { description: 'the commands ended within ?wait', ...json(TaskViewC) },
      202: { description: 'accepted: follow Location (the job)', ...json(JobViewC), headers: { location: '/v1/jobs/{id}' } },
      404: problem('no such task (or not yours)'),
      409: problem('the task is not a daemon, or not running and the body does not ask to start it'),
    },
    handler: async ({ reply, user, params, body, query }) => {
      const r = visibleTask(db, user, params.id);
      const live = await readElement(b, 'executor', elementsOf(r.id).executor);
      const running = r.state === 'running' && live !== undefined;
      const notRunning = (why: string): HttpProblem =>
        new HttpProblem({ ...conflict(`/v1/tasks/${r.id}`, 0, 0), message: `task ${r.id} ${why} (state ${r.state})` }, 409);
      if (!r.plan.daemon) throw notRunning('is not a daemon task');
      if (!running) {
        if (body.start !== true) throw notRunning('is not running: send "start": true to create it again from its stored spec');
        // one of concurrent restarts wins (checked where it is written); the others' commands follow its start
        let restart = false;
        const cur = await db.updateTask(r.id, (x) =>
          RESTARTABLE.has(x.state)
            ? ((restart = true), { ...x, state: 'queued', ended: null, error: null, expires: null })
            : undefined,
        );
        if (!restart && cur?.state !== 'queued' && cur?.state !== 'running') throw notRunning('cannot be started again now');
        // what is left of the old container goes (first on the task's chain); the commands' results stay; the run makes it again
        if (restart) await d.runner.serialize(r.id, () => d.runner.teardown(r.id, false));
      }
      const j = await queue.submitExec(
        r.id,
        body.cmd.map((cmd) => ({
          cmd,
          ...(body.env === undefined ? {} : { env: body.env }),
          ...(body.pwd === undefined ? {} : { pwd: body.pwd }),
        })),
      );
      if (j === undefined) throw new HttpProblem(notFound(`/v1/tasks/${r.id}`), 404);
      return answerJob(reply, j, query?.wait);
    },
  });

  route(app, db, {
    method: 'DELETE',
    url: '/v1/tasks/:id',
    summary: 'Kill and remove a task (its container, volumes and results); idempotent',
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    responses: { 204: { description: 'removed (or removed before)' }, 404: problem('no such task (or not yours)') },
    handler: async ({ reply, user, params }) => {
      const r = db.tasks.get(params.id);
      if (r === undefined || (r.owner !== user.name && !user.admin))
        throw new HttpProblem(notFound(`/v1/tasks/${params.id}`), 404);
      if (!r.deleted) await d.removeTask(r.id, 'deleted');
      reply.code(204);
      return undefined;
    },
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/events',
    summary: "Server-Sent Events of the caller's elements (lessl events); resumable with Last-Event-ID (an opaque id per user)",
    tags: ['events'],
    auth: 'user',
    query: EventsQueryC,
    responses: {
      200: {
        description: "an event stream: id = the event's id for this user (opaque), event = type, data = the lessl event",
        contentType: 'text/event-stream',
      },
      400: problem('Last-Event-ID or since is not an event id this user was given'),
    },
    handler: async ({ req, reply, user, query }) => {
      const since = sinceOf(d.cursors, user.name, req.headers['last-event-id'], query?.since) ?? b.events.lastSeq();
      const ac = new AbortController();
      req.raw.on('close', () => ac.abort());
      const stream = b.events.stream({}, { since, signal: ac.signal, overflow: 'drop-oldest', highWaterMark: 4096 });
      const mine = async (e: LesslEvent): Promise<boolean> => {
        if (user.admin) return true;
        const task = serviceTaskOf(e.id.key);
        if (task !== undefined) return db.tasks.get(task)?.owner === user.name;
        // the caller's own elements: those the authorizer lets them read, but not public ones
        const kind = kindOfKey(e.id.key);
        const el = kind === undefined ? undefined : await readElement(b, kind, e.id.key, as(user.name));
        return el !== undefined && !isPublic(el);
      };
      async function* sse(): AsyncGenerator<string> {
        yield ': lessl events\n\n';
        try {
          for await (const e of stream) {
            if (!(await mine(e))) continue;
            const { seq: _seq, ...data } = eventToJson(e); // the global seq stays in the service (admins see it)
            const id = d.cursors.encode(user.name, e.seq);
            yield `id: ${id}\nevent: ${e.type}\ndata: ${JSON.stringify(user.admin ? { seq: e.seq, ...data } : data)}\n\n`;
          }
        } catch (err) {
          // the client went away, or the backend closed; a replay past retention says why it ends
          if (err instanceof LesslError) yield `event: error\ndata: ${JSON.stringify(problemOf(err.error, 400, req.url))}\n\n`;
        } finally {
          stream.close();
        }
      }
      reply.header('content-type', 'text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no');
      return Readable.from(sse());
    },
  });

  route(app, db, {
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
      const token = await addUser(db, {
        name: body.name,
        admin: body.admin === true,
        created: new Date().toISOString(),
        ...(body.maxima === undefined ? {} : { maxima: body.maxima }),
      });
      if (token === undefined)
        throw new HttpProblem({ _tag: 'NameCollision', message: `user ${body.name} exists`, id: body.name }, 409);
      reply.code(201).header('location', `/v1/users/${body.name}`);
      return { name: body.name, admin: body.admin === true, token };
    },
  });

  route(app, db, {
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

  route(app, db, {
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

  route(app, db, {
    method: 'GET',
    url: '/metrics',
    summary: 'Prometheus metrics',
    tags: ['service'],
    auth: 'none',
    responses: { 200: { description: 'Prometheus text format', contentType: 'text/plain' } },
    handler: async ({ reply }) => {
      reply.header('content-type', d.metrics.prometheus.contentType);
      return d.metrics.prometheus.metrics();
    },
  });
};

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((res) => {
    const timer = setTimeout(res, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), res()), { once: true });
  });

/** The output of a task's commands in order; with `follow`, waits for commands still to come until the task is done. */
async function* logStream(b: Backend, db: ServiceDb, task: string, follow: boolean, signal: AbortSignal): AsyncGenerator<Buffer> {
  const el = elementsOf(task);
  for (let i = 0; !signal.aborted; i++) {
    // wait (following) until command i exists, or there is nothing more to come
    for (;;) {
      const r = db.tasks.get(task);
      const c = r?.commands[i];
      const more = r !== undefined && !r.deleted && (r.state === 'queued' || r.state === 'running');
      if ((await readElement(b, 'task', el.command(i))) !== undefined) break;
      if (
        !follow ||
        signal.aborted ||
        (c === undefined && !(more && r?.plan.daemon === true)) ||
        (c !== undefined && c.state === 'skipped') ||
        !more
      )
        return;
      await sleep(100, signal);
    }
    try {
      for await (const ch of b.tasks.logs(el.command(i), { ...SERVICE, follow, signal })) yield Buffer.from(ch.data);
    } catch {
      return;
    }
  }
}
