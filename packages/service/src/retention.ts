/**
 * Retention: how long the service keeps what is over (deleted and expired task records, ended
 * jobs and their idempotency keys, events of the log), and the pass that removes what is past
 * its window. It runs with every reaper pass, so memory and disk stay bounded however many tasks
 * go through.
 */
import type { Backend } from '@lessl/kit';
import { FINAL_JOB_STATES, type JobRecord, type ServiceDb, type TaskRecord } from './db.js';

/** Retention windows, in seconds (see docs/service.md). */
export interface Retention {
  /** A deleted or expired task's record (DELETE answers 204 again, GET of an expired task answers it) after it ended. Default 86,400 (1 day). */
  readonly tasks: number;
  /** An ended job (and the Idempotency-Keys naming it) after it ended, once none of its tasks is kept. Default 86,400. */
  readonly jobs: number;
  /** An event of the log after its time: older ones are deleted (replays from before them answer InvalidEntry). Default 604,800 (7 days). */
  readonly events: number;
}

/** The retention windows when the operator sets none. */
export const DEFAULT_RETENTION: Retention = { tasks: 86_400, jobs: 86_400, events: 604_800 };

/** What one retention pass removed. */
export interface PruneResult {
  readonly tasks: number;
  readonly jobs: number;
  readonly events: number;
}

const ms = (iso: string | null): number => (iso === null ? 0 : Date.parse(iso));

/** When a task's record becomes removable: a deleted or expired task, from its end (or expiry, or creation). */
const taskOver = (r: TaskRecord): number | undefined =>
  r.deleted ? Math.max(ms(r.ended), ms(r.created)) : r.state === 'expired' ? Math.max(ms(r.expires), ms(r.ended)) : undefined;

/** Task records past the window whose containers and elements are gone. */
const staleTasks = async (db: ServiceDb, cutoff: number, hasElements: (task: string) => Promise<boolean>): Promise<string[]> => {
  const out: string[] = [];
  for (const r of db.tasks.values()) {
    const over = taskOver(r);
    if (over !== undefined && over <= cutoff && !(await hasElements(r.id))) out.push(r.id);
  }
  return out;
};

/** Ended jobs past the window none of whose tasks is kept. */
const staleJobs = (db: ServiceDb, cutoff: number, goneTasks: ReadonlySet<string>): JobRecord[] =>
  [...db.jobs.values()].filter(
    (j) =>
      FINAL_JOB_STATES.includes(j.state) &&
      Math.max(ms(j.ended), ms(j.created)) <= cutoff &&
      j.tasks.every((t) => goneTasks.has(t) || !db.tasks.has(t)),
  );

/**
 * One retention pass: removes task records, jobs (with their idempotency keys) and events past
 * their windows, in one batch for the records; answers how many of each went.
 */
export const prune = async (
  db: ServiceDb,
  backend: Backend,
  retention: Retention,
  hasElements: (task: string) => Promise<boolean>,
  now = Date.now(),
): Promise<PruneResult> => {
  const tasks = await staleTasks(db, now - retention.tasks * 1000, hasElements);
  const jobs = staleJobs(db, now - retention.jobs * 1000, new Set(tasks)).map((j) => j.id);
  const gone = new Set(jobs);
  const keys = [...db.idempotency].filter(([, job]) => gone.has(job)).map(([k]) => k);
  if (tasks.length + jobs.length > 0) await db.commit({ delTasks: tasks, delJobs: jobs, delIdempotency: keys });
  const events = await backend.compactEvents(new Date(now - retention.events * 1000));
  return { tasks: tasks.length, jobs: jobs.length, events };
};
