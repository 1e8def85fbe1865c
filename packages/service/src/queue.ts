/**
 * The durable job queue, on the service's records in the same level database. FIFO by sequence;
 * a claim is one atomic batch (the queue entry removed, the job marked running); at most
 * `concurrency` jobs run at once. A job's final state is written once. On start, jobs a crash
 * left running are run again, in submission order: the runner resumes from what the registry
 * holds (see runner.ts), so every accepted job ends exactly once and nothing is started twice.
 * Every change of a job or task record is an atomic read-modify-write (`ServiceDb.transact`).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ErrorRecord, InvokeRecord, JobRecord, JobState, ServiceDb, TaskRecord } from './db.js';
import { FINAL_JOB_STATES } from './db.js';
import type { TaskPlan } from './plan.js';
import type { Runner } from './runner.js';

/** A random resource ID with a one-letter kind prefix: `j_...`, `t_...`. */
export const newId = (prefix: 'j' | 't'): string => `${prefix}_${randomBytes(10).toString('hex')}`;

const now = (): string => new Date().toISOString();

/** Runs an invocation job: answers the error that stopped it, or null (it keeps its result with the job). */
export type Invoker = (job: JobRecord, signal: AbortSignal) => Promise<ErrorRecord | null>;

/** Why an invocation job a crash left running is failed rather than run again. */
const INTERRUPTED: ErrorRecord = {
  tag: 'Unavailable',
  message: 'the service stopped during the invocation (it may or may not have run): invoke again',
};

/** The queue. `start()` recovers and begins claiming. */
export class JobQueue {
  /** Emits `job` (JobRecord) on every state change. */
  readonly emitter = new EventEmitter();
  private readonly running = new Map<string, AbortController>();
  private readonly done = new Map<string, Promise<void>>();
  private stopped = true;

  constructor(
    private readonly db: ServiceDb,
    private readonly runner: Runner,
    private readonly concurrency: number,
    /** Runs invocation jobs (none: they fail as Unsupported). */
    private readonly invoker?: Invoker,
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** Jobs running now. */
  get active(): number {
    return this.running.size;
  }

  /**
   * Accepts a job making `plans` as tasks of `owner`: one batch writes the job, its tasks, its queue
   * entry, its idempotency key. When the idempotency key is taken already, nothing is written and
   * the job that holds it is answered (`accepted: false`; compare its `bodyHash`).
   */
  async submit(
    owner: string,
    plans: readonly TaskPlan[],
    batch: boolean,
    idem?: { key: string; bodyHash: string },
  ): Promise<{ job: JobRecord; accepted: boolean }> {
    const id = newId('j');
    const t = now();
    const tasks: TaskRecord[] = plans.map((plan) => ({
      id: newId('t'),
      owner,
      job: id,
      plan,
      state: 'queued',
      created: t,
      started: null,
      ended: null,
      expires: null,
      commands: plan.cmd.map((cmd) => pending(cmd)),
      error: null,
      deleted: false,
    }));
    const r = await this.db.transact(() => {
      const held = this.heldBy(idem);
      if (held !== undefined) return { result: { job: held, accepted: false } };
      const job = newJob(
        id,
        this.db.nextSeq(),
        owner,
        'task',
        tasks.map((x) => x.id),
        batch,
        null,
        idem?.bodyHash ?? null,
      );
      const keys = idem === undefined ? {} : { idempotency: [{ key: idem.key, job: id }] };
      return { change: { enqueue: [job], tasks, ...keys }, result: { job, accepted: true } };
    });
    if (r.accepted) this.accepted(r.job);
    return r;
  }

  /**
   * Accepts an exec job: the commands are appended to the task as it is when the batch is written
   * (so concurrent execs all land, in acceptance order) and run in order when the job runs.
   * Answers undefined when the task is gone or deleted.
   */
  async submitExec(
    task: string,
    cmds: readonly { cmd: string; env?: Record<string, string>; pwd?: string }[],
  ): Promise<JobRecord | undefined> {
    const id = newId('j');
    const job = await this.db.transact(() => {
      const cur = this.db.tasks.get(task);
      if (cur === undefined || cur.deleted) return { result: undefined };
      const exec = { from: cur.commands.length, count: cmds.length };
      const j = newJob(id, this.db.nextSeq(), cur.owner, 'exec', [task], false, exec, null);
      const next: TaskRecord = { ...cur, commands: [...cur.commands, ...cmds.map((c) => pending(c.cmd, c.env, c.pwd))] };
      return { change: { enqueue: [j], tasks: [next] }, result: j };
    });
    if (job !== undefined) this.accepted(job);
    return job;
  }

  /** The job an idempotency key names already (read inside `transact`), if any. */
  private heldBy(idem: { key: string } | undefined): JobRecord | undefined {
    const prior = idem === undefined ? undefined : this.db.idempotency.get(idem.key);
    return prior === undefined ? undefined : this.db.jobs.get(prior);
  }

  /**
   * Accepts an invocation job of `owner`: one batch writes the job (its input kept with it), its
   * queue entry and its idempotency key; a key taken already answers its job (`accepted: false`).
   */
  async submitInvoke(
    owner: string,
    invoke: InvokeRecord,
    idem?: { key: string; bodyHash: string },
  ): Promise<{ job: JobRecord; accepted: boolean }> {
    const r = await this.db.transact(() => {
      const held = this.heldBy(idem);
      if (held !== undefined) return { result: { job: held, accepted: false } };
      const id = newId('j');
      const job: JobRecord = {
        ...newJob(id, this.db.nextSeq(), owner, 'invoke', [], false, null, idem?.bodyHash ?? null),
        invoke,
      };
      const keys = idem === undefined ? {} : { idempotency: [{ key: idem.key, job: id }] };
      return { change: { enqueue: [job], ...keys }, result: { job, accepted: true } };
    });
    if (r.accepted) this.accepted(r.job);
    return r;
  }

  private accepted(job: JobRecord): void {
    this.emitter.emit('job', job);
    this.pump();
  }

  /** Recovers jobs a crash left running (in submission order: a task's execs resume in turn), then claims queued jobs. */
  start(): void {
    this.stopped = false;
    const resumed = [...this.db.jobs.values()].filter((j) => j.state === 'running').sort((a, b) => a.seq - b.seq);
    // an invocation is not run twice: one a crash interrupted fails, the caller invokes again
    for (const j of resumed) if (j.kind === 'invoke') void this.finish(j.id, 'failed', INTERRUPTED);
    // leave jobs are the leaver's (users-leave.ts)
    for (const j of resumed) if (j.kind === 'task' || j.kind === 'exec') this.launch(j);
    this.pump();
  }

  /** Stops claiming; running jobs are abandoned, not ended (their tasks keep running): the next start resumes them. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.runner.closing = true;
  }

  /** Waits until the job is final (or `ms` passed); answers the job as it is then. */
  waitFor(job: string, ms: number): Promise<JobRecord | undefined> {
    return new Promise((resolve) => {
      const cur = this.db.jobs.get(job);
      if (cur === undefined || FINAL_JOB_STATES.includes(cur.state) || ms <= 0) return resolve(cur);
      const on = (j: JobRecord): void => {
        if (j.id === job && FINAL_JOB_STATES.includes(j.state)) finish();
      };
      const timer = setTimeout(finish, ms);
      function finish(): void {
        clearTimeout(timer);
        emitter.off('job', on);
        resolve(db.jobs.get(job));
      }
      const emitter = this.emitter;
      const db = this.db;
      emitter.on('job', on);
    });
  }

  /**
   * Cancels a job: a queued one is dequeued; a running one is aborted (its commands killed) and
   * waited for. Either ends `cancelled`. A final job is left as it is.
   */
  async cancel(jobId: string): Promise<void> {
    const j = this.db.jobs.get(jobId);
    if (j === undefined || FINAL_JOB_STATES.includes(j.state)) return;
    if (j.state === 'queued') {
      // still queued when the change is written (a claim may have come first: then it is aborted below)
      const next = await this.db.updateJob(
        jobId,
        (cur) => (cur.state === 'queued' ? { ...cur, state: 'cancelled', ended: now() } : undefined),
        true,
      );
      if (next?.state === 'cancelled') {
        this.emitter.emit('job', next);
        return;
      }
    }
    this.running.get(jobId)?.abort(new Error('cancelled'));
    await this.done.get(jobId);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency && this.db.queue.length > 0) {
      // the in-memory queue changes only once the batch is durable: take the entry now so the loop moves on
      const id = this.db.queue.shift();
      if (id === undefined) break;
      this.running.set(id, new AbortController());
      let claimed: JobRecord | undefined;
      const claim = (j: JobRecord): JobRecord | undefined =>
        j.state === 'queued' ? (claimed = { ...j, state: 'running', started: now() }) : undefined;
      void this.db.updateJob(id, claim, true).then(
        () => {
          if (claimed === undefined) {
            // cancelled before the claim was written
            this.running.delete(id);
            return this.pump();
          }
          this.emitter.emit('job', claimed);
          this.launch(claimed);
        },
        () => {
          this.running.delete(id);
          this.db.queue.unshift(id);
        },
      );
    }
  }

  private launch(j: JobRecord): void {
    const ac = this.running.get(j.id) ?? new AbortController();
    this.running.set(j.id, ac);
    const p = this.execute(j, ac.signal)
      .then((error) => this.finish(j.id, ac.signal.aborted ? 'cancelled' : error === null ? 'done' : 'failed', error))
      .catch(() => undefined)
      .finally(() => {
        this.running.delete(j.id);
        this.done.delete(j.id);
        this.pump();
      });
    this.done.set(j.id, p);
  }

  private async execute(j: JobRecord, signal: AbortSignal): Promise<ErrorRecord | null> {
    if (j.kind === 'exec') return this.runner.run(j.tasks[0] ?? '', j.exec, signal);
    if (j.kind === 'invoke')
      return this.invoker?.(j, signal) ?? { tag: 'Unsupported', message: 'this service runs no functions' };
    const errors = await Promise.all(j.tasks.map((t) => this.runner.run(t, null, signal)));
    return errors.find((e) => e !== null) ?? null;
  }

  private async finish(id: string, state: JobState, error: ErrorRecord | null): Promise<void> {
    if (this.stopped) return;
    let next: JobRecord | undefined;
    await this.db.updateJob(id, (j) =>
      FINAL_JOB_STATES.includes(j.state) ? undefined : (next = { ...j, state, ended: now(), error }),
    );
    if (next !== undefined) this.emitter.emit('job', next);
  }
}

const newJob = (
  id: string,
  seq: number,
  owner: string,
  kind: JobRecord['kind'],
  tasks: readonly string[],
  batch: boolean,
  exec: JobRecord['exec'],
  bodyHash: string | null,
): JobRecord => ({
  id,
  seq,
  owner,
  kind,
  state: 'queued',
  tasks,
  batch,
  created: now(),
  started: null,
  ended: null,
  error: null,
  exec,
  bodyHash,
});

const pending = (cmd: string, env?: Record<string, string>, pwd?: string) => ({
  cmd,
  ...(env === undefined ? {} : { env }),
  ...(pwd === undefined ? {} : { pwd }),
  exitCode: null,
  state: 'pending' as const,
  reason: null,
  outputBytes: 0,
  truncated: false,
  startedAt: null,
  endedAt: null,
});
