/**
 * The task routes besides submission: `GET /v1/tasks` (the caller's, paginated), `GET
 * /v1/tasks/{id}`, its logs, `PUT` (exec into a daemon, or start it again) and `DELETE`.
 */
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyPluginAsync } from 'fastify';
import { conflict, notFound, taskStatusOf } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { ServiceDb, TaskRecord, UserRecord } from '../db.js';
import { elementsOf, readElement, SERVICE } from '../elements.js';
import { json, problem, route } from '../http.js';
import { HttpProblem } from '../problem.js';
import { ExecBodyC, IdParamsC, ListQueryC, LogsQueryC, SubmitQueryC, type ExecBody } from '../spec.js';
import { JobViewC, TaskPageC, taskView, TaskViewC } from '../views.js';
import { answerJob, type RouteDeps } from './deps.js';

/** The task record if the caller may see it (its owner, or an admin), else 404 (no existence leak). */
const visibleTask = (db: ServiceDb, u: UserRecord, id: string, evenDeleted = false): TaskRecord => {
  const r = db.tasks.get(id);
  if (r === undefined || (r.deleted && !evenDeleted) || (r.owner !== u.name && !u.admin))
    throw new HttpProblem(notFound(`/v1/tasks/${id}`), 404);
  return r;
};

/** States from which `PUT` with `start: true` creates a daemon's container again. */
const RESTARTABLE = new Set(['exited', 'failed', 'killed', 'lost', 'expired']);

/** Newest first (then by ID, descending). */
const newestFirst = (a: TaskRecord, b: TaskRecord): number =>
  a.created === b.created ? (a.id < b.id ? 1 : -1) : a.created < b.created ? 1 : -1;

/** `GET /v1/tasks`, `GET /v1/tasks/{id}`. */
const readRoutes = (scope: Parameters<FastifyPluginAsync>[0], d: RouteDeps): void => {
  route(scope, {
    method: 'GET',
    url: '/v1/tasks',
    summary: "The caller's tasks, newest first, filtered and paginated",
    tags: ['tasks'],
    auth: 'user',
    query: ListQueryC,
    responses: { 200: { description: 'a page; `next` is the cursor of the next one', ...json(TaskPageC) } },
    handler: async ({ user, query }) => {
      const q = query ?? {};
      const all = [...d.db.tasks.values()]
        .filter((r) => !r.deleted && r.owner === user.name)
        .filter((r) => (q.state === undefined || r.state === q.state) && (q.job === undefined || r.job === q.job))
        .filter((r) => q.name === undefined || r.plan.name === q.name)
        .sort(newestFirst);
      const start = q.cursor === undefined ? 0 : all.findIndex((r) => r.id === q.cursor) + 1;
      const limit = q.limit ?? 50;
      const page = all.slice(start, start + limit);
      return {
        items: await Promise.all(page.map((r) => taskView(d.backend, r))),
        next: start + limit < all.length ? (page.at(-1)?.id ?? null) : null,
      };
    },
  });
  route(scope, {
    method: 'GET',
    url: '/v1/tasks/:id',
    summary: 'A task: state, per-command exit codes, output (or its size), container, created, expires',
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    responses: { 200: { description: 'the task', ...json(TaskViewC) }, 404: problem('no such task (or not yours)') },
    handler: async ({ user, params }) => taskView(d.backend, visibleTask(d.db, user, params.id)),
  });
};

/** `GET /v1/tasks/{id}/logs`. */
const logRoutes = (scope: Parameters<FastifyPluginAsync>[0], d: RouteDeps): void => {
  route(scope, {
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
      const r = visibleTask(d.db, user, params.id);
      const ac = new AbortController();
      req.raw.on('close', () => ac.abort());
      reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store');
      return Readable.from(logStream(d.backend, d.db, r.id, query?.follow === true, ac.signal));
    },
  });
};

/**
 * Makes sure a daemon task runs for an exec: a running one as it is; one that is not running is
 * created again from its stored spec when the body asks (`start: true`), else 409.
 */
const ensureRunning = async (d: RouteDeps, r: TaskRecord, body: ExecBody): Promise<void> => {
  const live = await readElement(d.backend, 'executor', elementsOf(r.id).executor);
  const notRunning = (why: string): HttpProblem =>
    new HttpProblem({ ...conflict(`/v1/tasks/${r.id}`, 0, 0), message: `task ${r.id} ${why} (state ${r.state})` }, 409);
  if (!r.plan.daemon) throw notRunning('is not a daemon task');
  if (r.state === 'running' && live !== undefined) return;
  if (body.start !== true) throw notRunning('is not running: send "start": true to create it again from its stored spec');
  // one of concurrent restarts wins (checked where it is written); the others' commands follow its start
  let restart = false;
  const cur = await d.db.updateTask(r.id, (x) =>
    RESTARTABLE.has(x.state) ? ((restart = true), { ...x, state: 'queued', ended: null, error: null, expires: null }) : undefined,
  );
  if (!restart && cur?.state !== 'queued' && cur?.state !== 'running') throw notRunning('cannot be started again now');
  // what is left of the old container goes (first on the task's chain); the commands' results stay; the run makes it again
  if (restart) await d.runner.serialize(r.id, () => d.runner.teardown(r.id, false));
};

/** `PUT /v1/tasks/{id}`, `DELETE /v1/tasks/{id}`. */
const changeRoutes = (scope: Parameters<FastifyPluginAsync>[0], d: RouteDeps): void => {
  route(scope, {
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
      const r = visibleTask(d.db, user, params.id);
      const extra = {
        ...(body.env === undefined ? {} : { env: body.env }),
        ...(body.pwd === undefined ? {} : { pwd: body.pwd }),
      };
      // the task owner's quotas: one more queued job, and a task again when a daemon is started again
      const restarts = body.start === true && r.state !== 'queued' && r.state !== 'running';
      const ask = { queuedJobs: 1, runningTasks: restarts ? 1 : 0 };
      const j = await d.quotas.admit(d.db.users.get(r.owner) ?? user, ask, async () => {
        await ensureRunning(d, r, body);
        return d.queue.submitExec(
          r.id,
          body.cmd.map((cmd) => ({ cmd, ...extra })),
        );
      });
      if (j === undefined) throw new HttpProblem(notFound(`/v1/tasks/${r.id}`), 404);
      return answerJob(d, reply, j, query?.wait);
    },
  });
  route(scope, {
    method: 'DELETE',
    url: '/v1/tasks/:id',
    summary: 'Kill and remove a task (its container, volumes and results); idempotent',
    tags: ['tasks'],
    auth: 'user',
    params: IdParamsC,
    responses: { 204: { description: 'removed (or removed before)' }, 404: problem('no such task (or not yours)') },
    handler: async ({ reply, user, params }) => {
      const r = visibleTask(d.db, user, params.id, true);
      if (!r.deleted) await d.removeTask(r.id, 'deleted');
      reply.code(204);
      return undefined;
    },
  });
};

/** The plugin of the task routes (besides submission). */
export const taskRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    readRoutes(scope, d);
    logRoutes(scope, d);
    changeRoutes(scope, d);
  };

/** Resolves after `ms`, or at once when `signal` aborts (its abort listener goes either way: a long follow polls). */
const sleep = (ms: number, signal: AbortSignal): Promise<void> => delay(ms, undefined, { signal }).catch(() => undefined);

/** Whether command i of a task may still come (following): the task goes on, and the command is pending or the task a daemon. */
const mayCome = (db: ServiceDb, task: string, i: number): boolean => {
  const r = db.tasks.get(task);
  const c = r?.commands[i];
  const more = r !== undefined && !r.deleted && (r.state === 'queued' || r.state === 'running');
  if (!more) return false;
  return c === undefined ? r.plan.daemon : c.state !== 'skipped';
};

/** The output of a task's commands in order; with `follow`, waits for commands still to come until the task is done. */
async function* logStream(b: Backend, db: ServiceDb, task: string, follow: boolean, signal: AbortSignal): AsyncGenerator<Buffer> {
  const el = elementsOf(task);
  for (let i = 0; !signal.aborted; i++) {
    // wait (following) until command i exists, or there is nothing more to come
    while ((await readElement(b, 'task', el.command(i))) === undefined) {
      if (!follow || signal.aborted || !mayCome(db, task, i)) return;
      await sleep(100, signal);
    }
    try {
      yield* commandLog(b, db, task, i, follow, signal);
    } catch {
      return;
    }
  }
}

/** The states of a command task whose run is over (its output is all kept). */
const ENDED = new Set(['exited', 'killed', 'lost']);

/**
 * Command i's output. Following, until the command has ended: a follow that ends before (the
 * command's task is made before it is bound and started, and a follow of a task not started yet
 * ends at once) is resumed where it stopped, so no output is lost between the two.
 */
async function* commandLog(
  b: Backend,
  db: ServiceDb,
  task: string,
  i: number,
  follow: boolean,
  signal: AbortSignal,
): AsyncGenerator<Buffer> {
  const id = elementsOf(task).command(i);
  for (let since = 0; ;) {
    // checked before the read: a read that starts once the command (or the task) is over gets the rest
    const last =
      !follow || !mayCome(db, task, i) || ENDED.has(taskStatusOf((await readElement(b, 'task', id))?.attributes ?? {}).state);
    for await (const ch of b.tasks.logs(id, { ...SERVICE, follow, since, signal })) {
      since += ch.data.byteLength;
      yield Buffer.from(ch.data);
    }
    if (last || signal.aborted) return;
    await sleep(100, signal);
  }
}
