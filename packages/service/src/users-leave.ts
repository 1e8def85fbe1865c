/**
 * A user leaves (`DELETE /v1/users/{name}`): one durable job of kind `leave` removes everything
 * the user owns. Accepting it is one batch: the user's tokens are revoked (nothing new arrives,
 * the user answers 401 at once), the user is marked `leaving` (its name cannot be taken again)
 * and the job is written, running. It then removes, in order: the user's jobs (queued ones
 * cancelled, running ones aborted: their commands killed), tasks (containers, volumes, results,
 * records), functions, images, volumes and hosts (drained, unregistered); last, in one batch, the
 * user record, its job and idempotency records, and the job's end. Events are kept (audit).
 *
 * Every step looks at what is there now and removes it (what is gone already is success), and
 * each removal is recorded with the job as it is made: a job a crash (kill -9) interrupted runs
 * again at the next start and does what is left, once. Passes repeat (at most three) while one
 * still finds something (a request accepted just before the tokens went). When something could
 * not be removed, the job ends `failed` naming it, the user stays (unable to authenticate) and a
 * new DELETE runs the removal again.
 */
import type { FastifyPluginAsync } from 'fastify';
import * as t from 'io-ts';
import * as E from 'fp-ts/lib/Either.js';
import { conflict, notFound, permissionDenied, type AnyError } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import { ADMIN } from './auth.js';
import { describe, IntFromString, strict } from './codec.js';
import {
  FINAL_JOB_STATES,
  LEAVE_KINDS,
  type JobRecord,
  type LeaveKind,
  type LeaveRecord,
  type ServiceDb,
  type UserRecord,
} from './db.js';
import { listElements, SERVICE, USER_PRINCIPAL } from './elements.js';
import { json, problem, route } from './http.js';
import { operationsOf } from './operate.js';
import type { Policy } from './plan.js';
import { HttpProblem } from './problem.js';
import { newId, type JobQueue } from './queue.js';
import type { Runner } from './runner.js';
import { JobViewC, jobView } from './views.js';

/** What a leave job uses. */
export interface LeaveDeps {
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly queue: JobQueue;
  readonly runner: Runner;
  readonly policy: Policy;
  /** Removes a task (kill, containers, volumes, results) and marks it deleted. */
  readonly removeTask: (task: string, mark: 'deleted') => Promise<void>;
}

/** One kind of removal: what of the user's is there now, and how one goes (answers why not, or undefined). */
interface Step {
  readonly kind: LeaveKind;
  find(user: string, job: string): Promise<readonly string[]>;
  remove(id: string): Promise<string | undefined>;
}

/** Passes over the steps at most (each after the first only when the one before removed something). */
const PASSES = 3;
/** How long a user's host may take to drain (its tasks were removed before). */
const HOST_DRAIN_MS = 5_000;

const now = (): string => new Date().toISOString();
const tokenId = (hash: string): string => hash.slice(0, 12);
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
/** Why a removal answered `Left` (already gone is success). */
const whyNot = (r: E.Either<AnyError, unknown>): string | undefined =>
  E.isRight(r) || r.left._tag === 'NotFound' ? undefined : r.left.message;

const emptyRemoved = (): Record<LeaveKind, string[]> => ({
  tokens: [],
  jobs: [],
  tasks: [],
  functions: [],
  images: [],
  volumes: [],
  hosts: [],
});

/** Runs leave jobs: accepts them, runs them at once (beside the queue), resumes them at start. */
export class Leaver {
  private readonly running = new Map<string, Promise<void>>();
  private stopped = true;
  private readonly steps: readonly Step[];

  constructor(private readonly d: LeaveDeps) {
    this.steps = stepsOf(d);
  }

  /**
   * Accepts the removal of user `name`, asked by `caller`: one batch revokes its tokens, cancels
   * its queued jobs, marks it leaving and writes the job (running). A removal under way answers its job; an unknown user, undefined.
   */
  async accept(caller: UserRecord, name: string): Promise<JobRecord | undefined> {
    const db = this.d.db;
    const r = await db.transact(() => {
      const u = db.users.get(name);
      if (u === undefined) return { result: undefined };
      const under = u.leaving === undefined ? undefined : db.jobs.get(u.leaving);
      if (under !== undefined && !FINAL_JOB_STATES.includes(under.state))
        return { result: { job: under, fresh: false, cancelled: [] } };
      const hashes = tokensOf(db, name);
      // queued jobs are cancelled in the same batch: none is claimed after (nor at a restart)
      const cancelled = [...db.jobs.values()]
        .filter((j) => j.owner === name && j.state === 'queued')
        .map((j): JobRecord => ({ ...j, state: 'cancelled', ended: now() }));
      const removed = { ...emptyRemoved(), tokens: hashes.map(tokenId), jobs: cancelled.map((j) => j.id) };
      const job: JobRecord = {
        id: newId('j'),
        seq: db.nextSeq(),
        owner: caller.name,
        kind: 'leave',
        state: 'running',
        tasks: [],
        batch: false,
        created: now(),
        started: now(),
        ended: null,
        error: null,
        exec: null,
        bodyHash: null,
        leave: { user: name, removed, failed: [] },
      };
      const change = { users: [{ ...u, leaving: job.id }], delTokens: hashes, jobs: [job], dequeue: cancelled };
      return { change, result: { job, fresh: true, cancelled } };
    });
    if (r?.fresh === true) {
      for (const j of [...r.cancelled, r.job]) this.d.queue.emitter.emit('job', j);
      this.launch(r.job.id);
    }
    return r?.job;
  }

  /** Resumes the leave jobs a crash left running. */
  start(): void {
    this.stopped = false;
    for (const j of this.d.db.jobs.values()) if (j.kind === 'leave' && j.state === 'running') this.launch(j.id);
  }

  /** Stops starting removals; jobs under way are abandoned as they are (the next start resumes them). */
  stop(): void {
    this.stopped = true;
  }

  private launch(id: string): void {
    if (this.running.has(id) || this.stopped) return;
    const p = this.execute(id)
      .catch(() => undefined)
      .finally(() => this.running.delete(id));
    this.running.set(id, p);
  }

  /** The passes, then the end. */
  private async execute(id: string): Promise<void> {
    for (let pass = 0; pass < PASSES; pass++) {
      const removed = await this.pass(id);
      if (this.stopped) return;
      if (removed === 0) break;
    }
    await this.end(id);
  }

  /** One pass over the steps: answers how many removals it made (its failures replace the last pass's). */
  private async pass(id: string): Promise<number> {
    const user = this.d.db.jobs.get(id)?.leave?.user;
    if (user === undefined) return 0;
    const interrupted = this.d.db.jobs.get(id)?.leave?.removing;
    await this.amend(id, (l) => ({ ...l, failed: [] }));
    let count = 0;
    // a removal a crash interrupted may be made already (then its item is found no more): make it again, and report it
    if (interrupted !== undefined) count += await this.removeOne(id, interrupted.kind, interrupted.id);
    for (const step of this.steps)
      for (const item of await step.find(user, id)) {
        if (this.stopped) return count;
        count += await this.removeOne(id, step.kind, item);
      }
    return count;
  }

  /** One removal: noted as under way first, then made, then noted as removed or failed; answers 1 when it was removed. */
  private async removeOne(id: string, kind: LeaveKind, item: string): Promise<number> {
    const step = this.steps.find((s) => s.kind === kind);
    if (step === undefined) return 0;
    await this.amend(id, (l) => ({ ...l, removing: { kind, id: item } }));
    const error = await step.remove(item).catch(message);
    await this.amend(id, (l) => noted(l, kind, item, error));
    return error === undefined ? 1 : 0;
  }

  /** Changes the leave record of job `id`. */
  private async amend(id: string, f: (l: LeaveRecord) => LeaveRecord): Promise<void> {
    const next = await this.d.db.updateJob(id, (j) => (j.leave === undefined ? undefined : { ...j, leave: f(j.leave) }));
    if (next !== undefined) this.d.queue.emitter.emit('job', next);
  }

  /** The end, one batch: done (the user and its records go) or failed (the user stays, leaving). */
  private async end(id: string): Promise<void> {
    const db = this.d.db;
    const next = await db.transact(() => {
      const j = db.jobs.get(id);
      const l = j?.leave;
      if (j === undefined || l === undefined || FINAL_JOB_STATES.includes(j.state)) return { result: undefined };
      if (l.failed.length > 0) {
        const error = { tag: 'Unavailable', message: `${l.failed.length} removal(s) failed: DELETE the user again to retry` };
        const failed: JobRecord = { ...j, state: 'failed', ended: now(), error };
        return { change: { jobs: [failed] }, result: failed };
      }
      const done: JobRecord = { ...j, state: 'done', ended: now() };
      const records = recordsOf(db, l.user, id);
      return { change: { ...records, jobs: [done], delUsers: [l.user] }, result: done };
    });
    if (next !== undefined) this.d.queue.emitter.emit('job', next);
  }
}

/** The leave record with one removal noted: removed (once), or failed with why. */
const noted = (l: LeaveRecord, kind: LeaveKind, item: string, error: string | undefined): LeaveRecord => {
  const { removing: _done, ...rest } = l;
  return error === undefined
    ? { ...rest, removed: { ...l.removed, [kind]: [...new Set([...l.removed[kind], item])] } }
    : { ...rest, failed: [...l.failed.filter((f) => f.kind !== kind || f.id !== item), { kind, id: item, error }] };
};

/** The hashes of a user's tokens. */
const tokensOf = (db: ServiceDb, user: string): string[] => [...db.tokens].filter(([, u]) => u === user).map(([h]) => h);

/** The user's records that go with it: its jobs (but the leave job), task records, idempotency keys. */
const recordsOf = (db: ServiceDb, user: string, keep: string) => ({
  delJobs: [...db.jobs.values()].filter((j) => j.owner === user && j.id !== keep).map((j) => j.id),
  delTasks: [...db.tasks.values()].filter((r) => r.owner === user).map((r) => r.id),
  delIdempotency: [...db.idempotency.keys()].filter((k) => k.startsWith(`${user}!`)),
});

/** The steps over the service's own records: tokens, jobs, tasks (with their elements). */
const recordSteps = (d: LeaveDeps): Step[] => {
  const { db, runner } = d;
  return [
    {
      kind: 'tokens',
      find: async (user) => tokensOf(db, user),
      remove: async (hash) => void (await db.commit({ delTokens: [hash] })),
    },
    {
      kind: 'jobs',
      find: async (user, leave) =>
        [...db.jobs.values()]
          .filter((j) => j.owner === user && j.id !== leave && j.kind !== 'leave' && !FINAL_JOB_STATES.includes(j.state))
          .map((j) => j.id),
      remove: async (id) => {
        await d.queue.cancel(id);
        const j = db.jobs.get(id);
        return j === undefined || FINAL_JOB_STATES.includes(j.state) ? undefined : `the job is still ${j.state}`;
      },
    },
    {
      kind: 'tasks',
      find: async (user) => [...db.tasks.values()].filter((r) => r.owner === user).map((r) => r.id),
      remove: async (id) => {
        await d.removeTask(id, 'deleted');
        // a removal a crash interrupted is marked already: finish it here
        await runner.kill(id);
        await runner.serialize(id, () => runner.teardown(id, true));
        if (await runner.hasElements(id)) return 'its container or volumes are left';
        await db.commit({ delTasks: [id] });
        return undefined;
      },
    },
  ];
};

/** The steps over what the user owns on the backend: functions, images, volumes, hosts. */
const backendSteps = (d: LeaveDeps): Step[] => {
  const { db, backend: b } = d;
  const elements = (kind: 'image' | 'volume', store: string): Step => ({
    kind: kind === 'image' ? 'images' : 'volumes',
    find: async (user) => (await listElements(b, kind, { store, ro: { owner: user } })).map((e) => e.id.key),
    remove: async (id) => whyNot(await b.stores[kind].delete(id, SERVICE)()),
  });
  return [
    {
      kind: 'functions',
      find: async (user) => {
        const all = await b.functions.list(SERVICE)();
        return E.isLeft(all) ? [] : all.right.filter((f) => f.owner === `${USER_PRINCIPAL}${user}`).map((f) => f.name);
      },
      remove: async (name) => whyNot(await b.functions.remove(name, SERVICE)()),
    },
    elements('image', d.policy.imageStore),
    elements('volume', 'local'),
    {
      kind: 'hosts',
      find: async (user) => [...db.hosts.values()].filter((h) => h.owner === user).map((h) => h.name),
      remove: async (name) => {
        // drained first, unregistered after: a crash in between drains it again at the next start
        const hosts = operationsOf(b).hosts;
        const why = hosts === undefined ? undefined : whyNot(await hosts.drain(name, { deadlineMs: HOST_DRAIN_MS })());
        if (why === undefined) await db.commit({ delHosts: [name] });
        return why;
      },
    },
  ];
};

/** The steps of a leave job, in the order of `LEAVE_KINDS` (see the module comment). */
const stepsOf = (d: LeaveDeps): readonly Step[] => {
  const steps = [...recordSteps(d), ...backendSteps(d)];
  return LEAVE_KINDS.flatMap((k) => steps.filter((s) => s.kind === k));
};

const UserParamsC = strict('UserParams', { name: t.string });
const LeaveQueryC = strict(
  'LeaveQuery',
  {},
  { wait: describe(IntFromString(0, 300), 'seconds to wait for the removal to end: 200 with the job when it does') },
);

/** `DELETE /v1/users/{name}`: an admin removes a user, or a user itself (see the module comment). */
export const leaveRoutes =
  (leaver: Leaver, queue: JobQueue): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'DELETE',
      url: '/v1/users/:name',
      summary:
        'Remove a user and everything it owns (admins; a user may remove itself): 202 and a leave job; its tokens are revoked at once',
      tags: ['users'],
      auth: 'user',
      params: UserParamsC,
      query: LeaveQueryC,
      responses: {
        200: { description: 'removed within ?wait: the ended job with what it removed', ...json(JobViewC) },
        202: { description: 'the leave job: follow it at Location (admins)', ...json(JobViewC) },
        403: problem('another user, and the caller is no admin'),
        404: problem('no such user'),
        409: problem('the built-in admin stays'),
      },
      handler: async ({ user, params, query, reply }) => {
        if (!user.admin && user.name !== params.name)
          throw new HttpProblem(permissionDenied(`/v1/users/${params.name}`, user.name, 'delete'), 403);
        if (params.name === ADMIN)
          throw new HttpProblem({ ...conflict('/v1/users/admin', 0, 0), message: 'the built-in admin cannot be removed' }, 409);
        const job = await leaver.accept(user, params.name);
        if (job === undefined) throw new HttpProblem(notFound(`/v1/users/${params.name}`), 404);
        const cur = query.wait === undefined ? job : ((await queue.waitFor(job.id, query.wait * 1000)) ?? job);
        reply.code(FINAL_JOB_STATES.includes(cur.state) ? 200 : 202).header('location', `/v1/jobs/${cur.id}`);
        return jobView(cur);
      },
    });
  };
