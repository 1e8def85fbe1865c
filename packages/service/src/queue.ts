/**
 * The durable job queue, on the service's records in the same level database. FIFO by sequence;
 * a claim is one atomic batch (the queue entry removed, the job marked running); at most
 * `concurrency` jobs run at once. A job's final state is written once. On start, jobs a crash
 * left running are run again: the runner resumes from what the registry holds (see runner.ts),
 * so every accepted job ends exactly once and nothing is started twice.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ErrorRecord, JobRecord, JobState, ServiceDb, TaskRecord } from './db.js';
import { FINAL_JOB_STATES } from './db.js';
import type { TaskPlan } from './plan.js';
import type { Runner } from './runner.js';

/** A random resource ID with a one-letter kind prefix: `j_...`, `t_...`. */
export const newId = (prefix: 'j' | 't'): string => `${prefix}_${randomBytes(10).toString('hex')}`;

const now = (): string => new Date().toISOString();

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
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** Jobs running now. */
  get active(): number {
    return this.running.size;
  }

  /** Accepts a job making `plans` as tasks of `owner`: one batch writes the job, its tasks, its queue entry, its idempotency key. */
  async submit(
    owner: string,
    plans: readonly TaskPlan[],
    batch: boolean,
    idem?: { key: string; bodyHash: string },
  ): Promise<JobRecord> {
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
    const job: JobRecord = {
      id,
      seq: this.db.nextSeq(),
      owner,
      kind: 'task',
      state: 'queued',
      tasks: tasks.map((x) => x.id),
      batch,
      created: t,
      started: null,
      ended: null,
      error: null,
      exec: null,
      bodyHash: idem?.bodyHash ?? null,
    };
    await this.db.commit({ enqueue: [job], tasks, ...(idem === undefined ? {} : { idempotency: [{ key: idem.key, job: id }] }) });
    this.emitter.emit('job', job);
    this.pump();
    return job;
  }

  /** Accepts an exec job: the commands are appended to the task now and run in order when the job runs. */
  async submitExec(
    task: TaskRecord,
    cmds: readonly { cmd: string; env?: Record<string, string>; pwd?: string }[],
  ): Promise<JobRecord> {
    const id = newId('j');
    const job: JobRecord = {
      id,
      seq: this.db.nextSeq(),
      owner: task.owner,
      kind: 'exec',
      state: 'queued',
      tasks: [task.id],
      batch: false,
      created: now(),
      started: null,
      ended: null,
      error: null,
      exec: { from: task.commands.length, count: cmds.length },
      bodyHash: null,
    };
    const next: TaskRecord = { ...task, commands: [...task.commands, ...cmds.map((c) => pending(c.cmd, c.env, c.pwd))] };
    await this.db.commit({ enqueue: [job], tasks: [next] });
    this.emitter.emit('job', job);
    this.pump();
    return job;
  }

  /** Recovers jobs a crash left running, then claims queued jobs. */
  start(): void {
    this.stopped = false;
    for (const j of this.db.jobs.values()) if (j.state === 'running') this.launch(j);
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
      const next: JobRecord = { ...j, state: 'cancelled', ended: now() };
      await this.db.commit({ dequeue: [next] });
      this.emitter.emit('job', next);
      return;
    }
    this.running.get(jobId)?.abort(new Error('cancelled'));
    await this.done.get(jobId);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency && this.db.queue.length > 0) {
      const id = this.db.queue[0] as string;
      const j = this.db.jobs.get(id) as JobRecord;
      const claimed: JobRecord = { ...j, state: 'running', started: now() };
      // the in-memory queue changes only once the batch is durable: take the entry now so the loop moves on
      this.db.queue.shift();
      this.running.set(id, new AbortController());
      void this.db.commit({ dequeue: [claimed] }).then(
        () => {
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
    if (j.kind === 'exec') return this.runner.run(j.tasks[0] ?? '', j.exec?.from ?? 0, signal);
    const errors = await Promise.all(j.tasks.map((t) => this.runner.run(t, 0, signal)));
    return errors.find((e) => e !== null) ?? null;
  }

  private async finish(id: string, state: JobState, error: ErrorRecord | null): Promise<void> {
    if (this.stopped) return;
    const j = this.db.jobs.get(id);
    if (j === undefined || FINAL_JOB_STATES.includes(j.state)) return;
    const next: JobRecord = { ...j, state, ended: now(), error };
    await this.db.commit({ jobs: [next] });
    this.emitter.emit('job', next);
  }
}

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
