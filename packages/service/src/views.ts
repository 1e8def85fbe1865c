/**
 * What the API answers for jobs and tasks. The codecs type the views and generate their
 * OpenAPI schemas.
 */
import * as t from 'io-ts';
import { taskStatusOf } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import { strict } from './codec.js';
import type { JobRecord, LeaveRecord, TaskRecord } from './db.js';
import { InvocationResultC, resultView } from './functions.js';
import { elementsOf, readElement, SERVICE } from './elements.js';

const nullable = <C extends t.Mixed>(c: C) => t.union([c, t.null]);
const ErrorC = t.type({ tag: t.string, message: t.string });

const ids = t.array(t.string);
/** What a leave job removed, as the API shows it. */
export const LeaveViewC = strict('LeaveView', {
  user: t.string,
  removed: strict('LeaveRemoved', {
    tokens: ids,
    jobs: ids,
    tasks: ids,
    functions: ids,
    images: ids,
    volumes: ids,
    hosts: ids,
  }),
  failed: t.array(t.type({ kind: t.string, id: t.string, error: t.string })),
});

/** A job as the API shows it. */
export const JobViewC = strict(
  'JobView',
  {
    id: t.string,
    kind: t.keyof({ task: null, exec: null, invoke: null, leave: null }),
    state: t.keyof({ queued: null, running: null, done: null, failed: null, cancelled: null }),
    tasks: t.array(t.string),
    created: t.string,
    started: nullable(t.string),
    ended: nullable(t.string),
    error: nullable(ErrorC),
    /** Where the result is: the task (or the batch's task list) once done. */
    location: nullable(t.string),
  },
  {
    /** Invocation jobs: the function invoked. */
    function: t.string,
    /** Invocation jobs, once done: how the invocation ended, its stdout and stderr. */
    result: InvocationResultC,
    /** Leave jobs: the user removed, what was removed so far (IDs per kind) and what could not be. */
    leave: LeaveViewC,
  },
);
/** A job view. */
export type JobView = t.TypeOf<typeof JobViewC>;

/** One command of a task as the API shows it. */
export const CommandViewC = t.type({
  cmd: t.string,
  state: t.keyof({ pending: null, running: null, exited: null, killed: null, lost: null, skipped: null }),
  exitCode: nullable(t.number),
  reason: nullable(t.string),
  outputBytes: t.number,
  truncated: t.boolean,
  startedAt: nullable(t.string),
  endedAt: nullable(t.string),
  /** The command's output (stdout and stderr in arrival order) as text, when it ended and is at most 64 KiB. */
  output: nullable(t.string),
});

/** A task as the API shows it. */
export const TaskViewC = t.type({
  id: t.string,
  name: nullable(t.string),
  state: t.string,
  job: t.string,
  image: t.string,
  daemon: t.boolean,
  created: t.string,
  started: nullable(t.string),
  ended: nullable(t.string),
  expires: nullable(t.string),
  /** The first non-zero exit code of its commands, else 0 once all ran; null before. */
  exitCode: nullable(t.number),
  commands: t.array(CommandViewC),
  error: nullable(ErrorC),
  /** The lessl executor (container) and where it runs. */
  container: t.type({ executor: t.string, id: nullable(t.string) }),
  /** The TCP ports the task serves (reached at /v1/tasks/{id}/ports/{port}/ and through routes). */
  ports: t.array(t.number),
});
/** A task view. */
export type TaskView = t.TypeOf<typeof TaskViewC>;

/** A page of tasks. */
export const TaskPageC = t.type({ items: t.array(TaskViewC), next: nullable(t.string) });

/** The URL a finished job points to. */
export const jobLocation = (j: JobRecord): string | null =>
  j.state !== 'done' || j.kind === 'invoke' || j.kind === 'leave'
    ? null
    : j.batch
      ? `/v1/tasks?job=${j.id}`
      : `/v1/tasks/${j.tasks[0] ?? ''}`;

/** The view of a job. */
export const jobView = (j: JobRecord): JobView => ({
  id: j.id,
  kind: j.kind,
  state: j.state,
  tasks: [...j.tasks],
  created: j.created,
  started: j.started,
  ended: j.ended,
  error: j.error,
  location: jobLocation(j),
  ...(j.invoke === undefined ? {} : { function: j.invoke.function }),
  ...(j.result === undefined ? {} : { result: resultView(j.result) }),
  ...(j.leave === undefined
    ? {}
    : { leave: { user: j.leave.user, removed: leaveRemoved(j.leave), failed: j.leave.failed.map((f) => ({ ...f })) } }),
});

/** The removals of a leave job, per kind (copied). */
const leaveRemoved = (l: LeaveRecord): t.TypeOf<typeof LeaveViewC>['removed'] => ({
  tokens: [...l.removed.tokens],
  jobs: [...l.removed.jobs],
  tasks: [...l.removed.tasks],
  functions: [...l.removed.functions],
  images: [...l.removed.images],
  volumes: [...l.removed.volumes],
  hosts: [...l.removed.hosts],
});

const INLINE = 64 << 10;

/** All of a task element's kept output, as text (undefined past `max` bytes). */
export const outputText = async (b: Backend, id: string, max = INLINE): Promise<string | null> => {
  const parts: Uint8Array[] = [];
  let n = 0;
  try {
    for await (const c of b.tasks.logs(id, SERVICE)) {
      n += c.data.byteLength;
      if (n > max) return null;
      parts.push(c.data);
    }
  } catch {
    return null;
  }
  return Buffer.concat(parts).toString('utf8');
};

/** The view of a task: its record, with the live state of running commands and the output of ended ones. */
export const taskView = async (b: Backend, r: TaskRecord): Promise<TaskView> => {
  const el = elementsOf(r.id);
  const commands = await Promise.all(
    r.commands.map(async (c, i) => {
      const id = el.command(i);
      const live = await readElement(b, 'task', id);
      const st = live === undefined ? undefined : taskStatusOf(live.attributes);
      const running = c.state === 'running' && st !== undefined;
      const ended = c.state === 'exited' || c.state === 'killed' || c.state === 'lost';
      return {
        cmd: c.cmd,
        state: c.state,
        exitCode: c.exitCode,
        reason: c.reason,
        outputBytes: running ? (st?.outputBytes ?? 0) : c.outputBytes,
        truncated: c.truncated,
        startedAt: c.startedAt,
        endedAt: c.endedAt,
        output: ended && live !== undefined && c.outputBytes <= INLINE ? await outputText(b, id) : null,
      };
    }),
  );
  const codes = r.commands.map((c) => c.exitCode);
  const failed = codes.find((c) => c !== null && c !== 0);
  const allRan = r.commands.length > 0 && r.commands.every((c) => c.state !== 'pending' && c.state !== 'running');
  const x = await readElement(b, 'executor', el.executor);
  return {
    id: r.id,
    name: r.plan.name,
    state: r.state,
    job: r.job,
    image: r.plan.image,
    daemon: r.plan.daemon,
    created: r.created,
    started: r.started,
    ended: r.ended,
    expires: r.expires,
    exitCode: failed ?? (allRan ? (codes.at(-1) ?? null) : null),
    commands,
    error: r.error,
    container: { executor: el.executor, id: typeof x?.attributes.containerId === 'string' ? x.attributes.containerId : null },
    ports: [...(r.plan.ports ?? [])],
  };
};
