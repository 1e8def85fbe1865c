/**
 * The service's records, in its part of the one level database: users, token hashes, jobs (with
 * the FIFO queue index), task records and idempotency keys. Every change is one atomic batch;
 * reads are served from an index loaded at open (small-scale by design, like the registry).
 *
 * Keys (JSON values): u!<user>  t!<sha256 of token>  j!<job>  q!<seq:16> -> job (queued)
 *   k!<task>  i!<user>!<sha256 of Idempotency-Key> -> job   h!<host> (hosts registered over REST)
 *   m!seq   m!eventKey (the secret of event ids)
 *   r!<sha256 of route> -> route (a shared route to a task's port; the route itself is never stored)
 *
 * Every read-modify-write goes through `transact` (or `updateTask` / `updateJob` on it): the
 * change is computed from the records as they are when it is written, on the one writer chain, so
 * two writers never both start from the same old record and lose one another's change.
 */
import { randomBytes } from 'node:crypto';
import type { AbstractBatchOperation, AbstractLevel } from 'abstract-level';
import { batchOptions } from '@lessl/level';
import { type Durability } from '@lessl/kit';
import type { FullLimits, Quotas, TaskPlan } from './plan.js';
import type { TaskState } from './spec.js';

/** A level database with string keys and values. */
export type StringDb = AbstractLevel<string, string, string>;

/** A user. Tokens are stored as hashes only. */
export interface UserRecord {
  readonly name: string;
  readonly admin: boolean;
  readonly created: string;
  readonly maxima?: Partial<FullLimits>;
  /** The user is being removed by this leave job: it cannot authenticate, and its name cannot be taken again until the job ends. */
  readonly leaving?: string;
  /** The user's own quotas (each replaces the operator's; absent: the operator's). */
  readonly quotas?: Partial<Quotas>;
}

/** A host registered over REST (`POST /v1/hosts`): added again at every start; `owner` null is a shared (admin's) host. */
export interface HostRecord {
  readonly name: string;
  readonly owner: string | null;
  readonly url: string;
  readonly tls?: { readonly ca: string; readonly cert: string; readonly key: string };
  readonly labels?: Readonly<Record<string, string>>;
  readonly capacity?: { readonly slots?: number; readonly memoryBytes?: number };
}

/** The kinds of things a leave job removes, in the order it removes them. */
export const LEAVE_KINDS = ['tokens', 'jobs', 'tasks', 'functions', 'images', 'volumes', 'hosts'] as const;
/** One kind of `LEAVE_KINDS`. */
export type LeaveKind = (typeof LEAVE_KINDS)[number];

/** What a leave job removes (the user) and, as it goes, what it removed and what it could not. */
export interface LeaveRecord {
  readonly user: string;
  /** IDs removed, per kind (tokens by the first 12 hex digits of their hash). */
  readonly removed: Readonly<Record<LeaveKind, readonly string[]>>;
  /** What could not be removed (the last attempt's error). */
  readonly failed: readonly { readonly kind: LeaveKind; readonly id: string; readonly error: string }[];
  /** The removal under way, written before it is made: a job resumed after a crash makes it again (gone is success) and reports it. */
  readonly removing?: { readonly kind: LeaveKind; readonly id: string };
}

/** Job states. `done`, `failed` and `cancelled` are final. */
export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
/** The final job states. */
export const FINAL_JOB_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];

/** A problem as recorded (a lessl error tag and its message). */
export interface ErrorRecord {
  readonly tag: string;
  readonly message: string;
}

/** What an invocation job invokes: the function, its input (base64, emptied once it ran), who asked. */
export interface InvokeRecord {
  readonly function: string;
  readonly input: string;
  /** The caller was an admin (invokes as the service). */
  readonly admin: boolean;
}

/** How an invocation job's invocation ended (stdout and stderr base64, as capped by the function's limits). */
export interface InvocationResultRecord {
  readonly invocation: string;
  readonly version: number;
  readonly exitCode: number | null;
  readonly reason: string;
  readonly durationMs: number;
  readonly cold: boolean;
  readonly truncated: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * A job: make (and run) the tasks of one POST, exec more commands in a daemon task (PUT), or
 * invoke a function (`POST /v1/functions/{name}/invoke?async`).
 */
export interface JobRecord {
  readonly id: string;
  readonly seq: number;
  readonly owner: string;
  readonly kind: 'task' | 'exec' | 'invoke' | 'leave';
  readonly state: JobState;
  readonly tasks: readonly string[];
  /** The request was an array (a batch): the result is the list of its tasks, even of one. */
  readonly batch: boolean;
  readonly created: string;
  readonly started: string | null;
  readonly ended: string | null;
  readonly error: ErrorRecord | null;
  /** For exec jobs: the commands appended to the task, from this index on. */
  readonly exec: { readonly from: number; readonly count: number } | null;
  /** sha256 of the request body, when an Idempotency-Key was given. */
  readonly bodyHash: string | null;
  /** For invocation jobs: what to invoke. */
  readonly invoke?: InvokeRecord;
  /** For invocation jobs, once done: how the invocation ended. */
  readonly result?: InvocationResultRecord;
  /** For leave jobs: the user removed, and what was removed so far. */
  readonly leave?: LeaveRecord;
}

/** One command of a task, as recorded once it ended (the live state is the lessl task element's). */
export interface CommandRecord {
  readonly cmd: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly pwd?: string;
  readonly exitCode: number | null;
  readonly state: 'pending' | 'running' | 'exited' | 'killed' | 'lost' | 'skipped';
  readonly reason: string | null;
  readonly outputBytes: number;
  readonly truncated: boolean;
  readonly startedAt: string | null;
  readonly endedAt: string | null;
}

/** A service task: one container running a seed-001 spec. */
export interface TaskRecord {
  readonly id: string;
  readonly owner: string;
  readonly job: string;
  readonly plan: TaskPlan;
  readonly state: TaskState;
  readonly created: string;
  readonly started: string | null;
  readonly ended: string | null;
  /** When the container and results are removed (set when the task starts). */
  readonly expires: string | null;
  readonly commands: readonly CommandRecord[];
  readonly error: ErrorRecord | null;
  /** The task was deleted (kept as a tombstone so DELETE stays idempotent; reads answer 404). */
  readonly deleted: boolean;
}

/** A shared route to a port of a task (`/r/{route}/`): only the SHA-256 of the route is kept. */
export interface RouteRecord {
  /** SHA-256 (hex) of the route. */
  readonly hash: string;
  /** A short id that names the route to its owner (not a secret: it cannot be used to reach the task). */
  readonly handle: string;
  readonly task: string;
  readonly port: number;
  readonly owner: string;
  readonly created: string;
}

/** True while a task may serve: queued or running, and not deleted (its routes live as long). */
export const taskLive = (t: TaskRecord): boolean => !t.deleted && (t.state === 'queued' || t.state === 'running');

/** One atomic change. */
export interface DbChange {
  readonly users?: readonly UserRecord[];
  readonly tokens?: readonly { readonly hash: string; readonly user: string }[];
  readonly delTokens?: readonly string[];
  readonly jobs?: readonly JobRecord[];
  readonly enqueue?: readonly JobRecord[];
  readonly dequeue?: readonly JobRecord[];
  readonly tasks?: readonly TaskRecord[];
  readonly idempotency?: readonly { readonly key: string; readonly job: string }[];
  /** Records removed by retention (task IDs, job IDs, idempotency keys). */
  readonly delTasks?: readonly string[];
  readonly delJobs?: readonly string[];
  readonly delIdempotency?: readonly string[];
  /** Users removed (a leave job's end). */
  readonly delUsers?: readonly string[];
  /** Hosts registered over REST, and those unregistered. */
  readonly hosts?: readonly HostRecord[];
  readonly delHosts?: readonly string[];
  /** Shared routes made, and removed (by hash). A task written as ended, or removed, takes its routes with it. */
  readonly routes?: readonly RouteRecord[];
  readonly delRoutes?: readonly string[];
}

const seqKey = (n: number): string => `q!${String(n).padStart(16, '0')}`;

/** The service's records. Open with `ServiceDb.open`. */
export class ServiceDb {
  readonly users = new Map<string, UserRecord>();
  readonly tokens = new Map<string, string>();
  readonly jobs = new Map<string, JobRecord>();
  readonly tasks = new Map<string, TaskRecord>();
  readonly idempotency = new Map<string, string>();
  readonly hosts = new Map<string, HostRecord>();
  /** Shared routes by the SHA-256 of the route. */
  readonly routes = new Map<string, RouteRecord>();
  /** Queued job IDs in FIFO order. */
  readonly queue: string[] = [];
  private seq = 0;
  private eventKey: string | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly watchers: ((c: DbChange) => void)[] = [];

  private constructor(
    private readonly db: StringDb,
    private readonly durability: Durability,
  ) {}

  /** Loads the records from `db` (opened here if it is not open); `disk` fsyncs every change before it resolves. */
  static async open(db: StringDb, durability: Durability = 'process'): Promise<ServiceDb> {
    await db.open();
    const s = new ServiceDb(db, durability);
    for await (const [k, v] of db.iterator({ gte: '', lt: '~' })) {
      const j: unknown = JSON.parse(v);
      const p = k.slice(0, 2);
      // the records are this class's own writes (JSON of the types below); strings and numbers are checked
      if (p === 'u!') s.users.set(k.slice(2), j as UserRecord);
      else if (p === 'j!') s.jobs.set(k.slice(2), j as JobRecord);
      else if (p === 'k!') s.tasks.set(k.slice(2), j as TaskRecord);
      else if (p === 'h!') s.hosts.set(k.slice(2), j as HostRecord);
      else if (p === 'r!') s.routes.set(k.slice(2), j as RouteRecord);
      else if (typeof j === 'string') s.loadString(k, j);
      else if (k === 'm!seq' && typeof j === 'number') s.seq = j;
    }
    return s;
  }

  /** Loads a record whose value is a string: a token's user, a queued job, an idempotency key's job, the event key. */
  private loadString(k: string, v: string): void {
    const p = k.slice(0, 2);
    if (p === 't!') this.tokens.set(k.slice(2), v);
    else if (p === 'q!') this.queue.push(v);
    else if (p === 'i!') this.idempotency.set(k.slice(2), v);
    else if (k === 'm!eventKey') this.eventKey = v;
  }

  /** The next job sequence number (persisted with the job that takes it; take it inside `transact`, so FIFO order is write order). */
  nextSeq(): number {
    return ++this.seq;
  }

  /** Applies one change atomically (changes are serialized in call order). */
  commit(c: DbChange): Promise<void> {
    return this.transact(() => ({ change: c, result: undefined }));
  }

  /**
   * Atomic read-modify-write: runs `f` on the writer chain, after every change queued before it is
   * applied and before any queued after it, and applies the change it answers (if any) in one
   * batch. `f` reads the records (the maps) and must not await; what it answers is the call's.
   */
  transact<A>(f: () => { readonly change?: DbChange; readonly result: A }): Promise<A> {
    const run = async (): Promise<A> => {
      const { change, result } = f();
      if (change !== undefined) await this.apply(change);
      return result;
    };
    return this.run(run);
  }

  /** Runs `write` after the writes before it. */
  private run<A>(write: () => Promise<A>): Promise<A> {
    const p = this.chain.then(write);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Updates task `id` atomically: `f` gets the record as it is when the change is written and
   * answers the new one (or undefined: no change). Answers the record as it is after.
   */
  updateTask(id: string, f: (r: TaskRecord) => TaskRecord | undefined): Promise<TaskRecord | undefined> {
    return this.transact(() => {
      const cur = this.tasks.get(id);
      const next = cur === undefined ? undefined : f(cur);
      return next === undefined ? { result: cur } : { change: { tasks: [next] }, result: next };
    });
  }

  /** Updates job `id` atomically, like `updateTask`; `queue` also takes it off the queue (a claim or a cancel). */
  updateJob(id: string, f: (j: JobRecord) => JobRecord | undefined, queue = false): Promise<JobRecord | undefined> {
    return this.transact(() => {
      const cur = this.jobs.get(id);
      const next = cur === undefined ? undefined : f(cur);
      if (next === undefined) return { result: cur };
      return { change: queue ? { dequeue: [next] } : { jobs: [next] }, result: next };
    });
  }

  /** The routes `c` removes: those it names, and those of the tasks it ends or removes. */
  private routesGone(c: DbChange): string[] {
    const ended = new Set([...(c.tasks ?? []).filter((t) => !taskLive(t)).map((t) => t.id), ...(c.delTasks ?? [])]);
    const dying = [...this.routes.values(), ...(c.routes ?? [])].filter((r) => ended.has(r.task)).map((r) => r.hash);
    return [...new Set([...(c.delRoutes ?? []), ...dying])];
  }

  /** Writes one change in one batch, then the in-memory index (only once the batch is durable). */
  private async apply(c: DbChange): Promise<void> {
    const delRoutes = this.routesGone(c);
    const ops: AbstractBatchOperation<StringDb, string, string>[] = [];
    const put = (key: string, value: unknown): void => void ops.push({ type: 'put', key, value: JSON.stringify(value) });
    for (const u of c.users ?? []) put(`u!${u.name}`, u);
    for (const t of c.tokens ?? []) put(`t!${t.hash}`, t.user);
    for (const h of c.delTokens ?? []) ops.push({ type: 'del', key: `t!${h}` });
    for (const j of [...(c.jobs ?? []), ...(c.enqueue ?? []), ...(c.dequeue ?? [])]) put(`j!${j.id}`, j);
    for (const j of c.enqueue ?? []) put(seqKey(j.seq), j.id);
    for (const j of c.dequeue ?? []) ops.push({ type: 'del', key: seqKey(j.seq) });
    for (const t of c.tasks ?? []) put(`k!${t.id}`, t);
    for (const i of c.idempotency ?? []) put(`i!${i.key}`, i.job);
    for (const id of c.delTasks ?? []) ops.push({ type: 'del', key: `k!${id}` });
    for (const id of c.delJobs ?? []) ops.push({ type: 'del', key: `j!${id}` });
    for (const k of c.delIdempotency ?? []) ops.push({ type: 'del', key: `i!${k}` });
    for (const n of c.delUsers ?? []) ops.push({ type: 'del', key: `u!${n}` });
    for (const h of c.hosts ?? []) put(`h!${h.name}`, h);
    for (const n of c.delHosts ?? []) ops.push({ type: 'del', key: `h!${n}` });
    for (const r of c.routes ?? []) put(`r!${r.hash}`, r);
    for (const h of delRoutes) ops.push({ type: 'del', key: `r!${h}` });
    if ((c.enqueue?.length ?? 0) > 0) put('m!seq', this.seq);
    await this.db.batch(ops, batchOptions(this.durability));
    for (const u of c.users ?? []) this.users.set(u.name, u);
    for (const t of c.tokens ?? []) this.tokens.set(t.hash, t.user);
    for (const h of c.delTokens ?? []) this.tokens.delete(h);
    for (const j of [...(c.jobs ?? []), ...(c.enqueue ?? []), ...(c.dequeue ?? [])]) this.jobs.set(j.id, j);
    for (const j of c.enqueue ?? []) this.queue.push(j.id);
    for (const j of c.dequeue ?? []) {
      const i = this.queue.indexOf(j.id);
      if (i >= 0) this.queue.splice(i, 1);
    }
    for (const t of c.tasks ?? []) this.tasks.set(t.id, t);
    for (const i of c.idempotency ?? []) this.idempotency.set(i.key, i.job);
    for (const id of c.delTasks ?? []) this.tasks.delete(id);
    for (const id of c.delJobs ?? []) this.jobs.delete(id);
    for (const k of c.delIdempotency ?? []) this.idempotency.delete(k);
    for (const n of c.delUsers ?? []) this.users.delete(n);
    for (const h of c.hosts ?? []) this.hosts.set(h.name, h);
    for (const n of c.delHosts ?? []) this.hosts.delete(n);
    for (const r of c.routes ?? []) this.routes.set(r.hash, r);
    for (const h of delRoutes) this.routes.delete(h);
    for (const w of this.watchers) w(c);
  }

  /** Calls `f` with every change once it is applied (the maps hold it), on the writer chain: for indexes of the records. */
  watch(f: (c: DbChange) => void): void {
    this.watchers.push(f);
  }

  /** The secret event ids are made with (32 random bytes, made and persisted at the first call). */
  async eventSecret(): Promise<Buffer> {
    if (this.eventKey === undefined)
      await this.run(async () => {
        if (this.eventKey !== undefined) return; // a concurrent first call made it
        const key = randomBytes(32).toString('base64');
        await this.db.batch([{ type: 'put', key: 'm!eventKey', value: JSON.stringify(key) }], batchOptions(this.durability));
        this.eventKey = key;
      });
    return Buffer.from(this.eventKey ?? '', 'base64');
  }

  /** Closes the database. */
  async close(): Promise<void> {
    await this.chain;
    await this.db.close();
  }
}
