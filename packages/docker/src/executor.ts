/**
 * Executors are containers. A commit's steps become Docker calls:
 * - join/leave of images and volumes are recorded; on a running executor they are Unsupported
 *   (Docker cannot change a running container's root filesystem or mounts);
 * - bind of a task on an executor with no running container creates the container from the
 *   joined image, volumes and options with the task as its process, and starts it; the commit
 *   returns once it has started (docs/lifecycle.md). A follower then hands its output to the
 *   runtime as it arrives, reads the exit code once the output is drained, removes the container
 *   of a one-shot task (a daemon's stays for inspection until the next bind or delete) and
 *   reports the end;
 * - bind of a task on a running executor runs it with exec, followed the same way; killing it
 *   signals every process in the container that carries the exec's marker in its environment;
 * - unbind of a running task stops it (TERM, grace period, KILL); the main container is removed.
 * A failing step undoes the earlier ones (stops and removes the container it started).
 *
 * The commit itself (order, rollback, retire) is the shared kit's (commit-kit.ts); this driver
 * supplies the container steps. Its parts: executor-settings.ts (what a container is made
 * from), executor-main.ts (main containers), executor-exec.ts (exec'd tasks),
 * executor-follow.ts (following runs to their end).
 */
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { restarts, unsupported, type AnyError, type DeleteError, type Element, type TaskStatus } from '@lessl/core';
import type { CommitPlan, CompositionRecord, DriverCommit, ExecutorDriver, Intent, PlanStep, RunSink } from '@lessl/kit';
import { commitPlan, destroyErrorOf, layoutOf, taskSpecOf, type FaultHook, type MainSteps, type Undo } from './commit-kit.js';
import type { Host } from './host.js';
import { resumeAgent } from './executor-agent.js';
import { resumeExec, startExec } from './executor-exec.js';
import { ContainerRuns, follow, followMain, logStream } from './executor-follow.js';
import { announceMain, startMain, stopMain } from './executor-main.js';
import { execReach, portsRefusal, reachingPorts } from './executor-ports.js';
import { DockerExecutorOptionsC, graceSecondsOf } from './executor-settings.js';
import { Demux } from './output.js';

export {
  backendOf,
  containerBase,
  DEFAULTS,
  DockerExecutorOptionsC,
  envOf,
  type DockerExecutorOptions,
} from './executor-settings.js';
import { containerIdOf } from './attributes.js';
export type { FaultHook } from './commit-kit.js';

/** An executor's main container as a commit sees it (recorded, then changed by the steps). */
interface XState {
  containerId: string | null;
  mainTask: string | null;
  running: boolean;
}

/** The executor's container state, as recorded (the followers keep the record current). */
const recorded = (attrs: Readonly<Record<string, unknown>>): XState => {
  const containerId = typeof attrs.containerId === 'string' ? attrs.containerId : null;
  const mainTask = typeof attrs.mainTask === 'string' ? attrs.mainTask : null;
  return { containerId, mainTask, running: containerId !== null && attrs.state === 'running' };
};

/**
 * The bind of a task: exec'd into the running container (a daemon cannot be), else the main
 * task of a new container (the stopped one it takes over from is retired).
 */
const bindTask = async (
  runs: ContainerRuns,
  plan: CommitPlan,
  step: PlanStep,
  x: XState,
  retired: string[],
  undo: Undo[],
): Promise<E.Either<AnyError, void>> => {
  if (x.running && x.containerId !== null) {
    const spec = taskSpecOf(plan, step.id);
    if (E.isLeft(spec)) return spec;
    if (spec.right.daemon === true)
      return E.left(
        unsupported(step.id, 'a daemon task exec’d into a running executor', 'bind it on a stopped executor instead'),
      );
    const refused = portsRefusal(step.id, spec.right, runs.agentOn, plan.options.readOnlyRootfs === true);
    if (E.isLeft(refused)) return refused;
    return startExec(runs, x.containerId, plan.runs.open(step.id));
  }
  if (x.containerId !== null) retired.push(x.containerId);
  const r = await startMain(runs, plan, plan.runs.open(step.id));
  if (E.isLeft(r)) return r;
  const cid = r.right;
  Object.assign(x, { running: true, containerId: cid, mainTask: step.id });
  undo.push(async () => void (await stopMain(runs, cid, 0)));
  return E.right(undefined);
};

/**
 * The container steps of one commit. A container the new composition replaces (the stopped
 * main of an unbound task, or the one a new main task takes over from) is kept until the
 * registry has the commit (`retired`).
 */
const containerSteps = (runs: ContainerRuns, plan: CommitPlan): MainSteps => {
  const x = recorded(plan.attributes);
  const graceSeconds = graceSecondsOf(plan.options);
  return {
    graceSeconds,
    storageFixed: 'Docker cannot change the storage of a running container',
    running: () => x.running,
    mainOf: (task) => (x.mainTask === task ? x.containerId : null),
    async stopMain(id) {
      const code = await stopMain(runs, id, graceSeconds, true);
      Object.assign(x, { running: false, containerId: null, mainTask: null });
      return code;
    },
    bind: (step, undo, retired) => bindTask(runs, plan, step, x, retired, undo),
    describe: () => ({
      state: x.running ? 'running' : 'stopped',
      containerId: x.containerId,
      mainTask: x.running ? x.mainTask : null,
      ...layoutOf(plan),
    }),
    remove: (id) => runs.removeContainer(id),
  };
};

/** Applies a plan with the shared kit; a rolled-back commit may have made a cold container (see `warmOnly`). */
const commit = async (runs: ContainerRuns, plan: CommitPlan, faults: FaultHook | undefined): Promise<DriverCommit> => {
  const r = await commitPlan(plan, faults, containerSteps(runs, plan));
  if (E.isLeft(r)) runs.warmOnly.delete(plan.executor.key);
  return r;
};

/** Follows again a main container that ran while no backend watched, or reports it lost. */
const resumeMain = async (runs: ContainerRuns, task: RunSink, containerId: string): Promise<void> => {
  const sink = reachingPorts(task, execReach(runs, containerId, task.task));
  let info: Docker.ContainerInspectInfo;
  try {
    info = await runs.containers.inspect(containerId);
  } catch {
    const executor = { state: 'stopped', containerId: null, mainTask: null };
    return void (await sink.end({ exitCode: null, reason: 'lost', executor }));
  }
  announceMain(runs, sink, containerId);
  if (restarts(sink.spec) || sink.spec.log?.destination === 'none') return follow(runs, sink, containerId, undefined, sink.kept);
  const running = info.State.Running;
  const logs = await logStream(runs, containerId, running);
  // a container still running is followed in the background; one that ended is read to its end now
  if (running) follow(runs, sink, containerId, logs, sink.kept);
  else await followMain(runs, sink, containerId, logs, new Demux((st, data) => sink.output(st, data), sink.kept));
};

/** On open: follows a task that ran while no backend watched, or reports how it ended. */
const resume = async (runs: ContainerRuns, sink: RunSink, status: TaskStatus): Promise<void> => {
  const p = status.process ?? {};
  const containerId = typeof p.containerId === 'string' ? p.containerId : undefined;
  if (containerId === undefined) return void (await sink.end({ exitCode: null, reason: 'lost' }));
  if (p.agent === true) return resumeAgent(runs, sink, containerId);
  if (typeof p.execId === 'string') return resumeExec(runs, sink, containerId, p.execId, String(p.marker ?? ''), p.warm === true);
  return resumeMain(runs, sink, containerId);
};

/** Removes an executor's containers: the labelled ones (unless it only ran warm), and the warm one it holds. */
const destroy = async (runs: ContainerRuns, el: Element): Promise<E.Either<DeleteError, void>> => {
  try {
    const cs = runs.warmOnly.delete(el.id.key) ? [] : await runs.containers.listOf(el.id.key);
    for (const c of cs) await runs.removeContainer(c.Id);
    // a warm container an executor took carries no lessl.id label
    const container = containerIdOf(el);
    if (container !== undefined) await runs.removeContainer(container);
    return E.right(undefined);
  } catch (err) {
    return E.left(destroyErrorOf(el.id.key, err));
  }
};

/** The executor driver: executors are containers on `engine` (`agentOn`, `directPorts`: the backend's options). */
export const executorDriver = (engine: Host, faults?: FaultHook, agentOn = true, directPorts = true): ExecutorDriver => {
  const runs = new ContainerRuns(engine, agentOn, directPorts);
  return {
    backendOptions: DockerExecutorOptionsC,
    commit: (plan) => commit(runs, plan, faults),
    resume: (sink: RunSink, status: TaskStatus, _executor: Element) => resume(runs, sink, status),
    async undo(plan, attributes) {
      runs.warmOnly.delete(plan.executor.key);
      const id = containerIdOf({ attributes });
      if (id !== undefined && id !== containerIdOf(plan)) await stopMain(runs, id, 0);
    },
    destroy: (el: Element, _comp: CompositionRecord | undefined) => destroy(runs, el),
    async recover(intent: Intent): Promise<void> {
      const cs = await runs.containers.listOf(intent.id).catch(() => []);
      for (const c of cs) await runs.removeContainer(c.Id);
    },
    async close() {
      runs.close();
    },
  };
};
