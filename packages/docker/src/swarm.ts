/**
 * Executors as Docker Swarm services (docs/swarm.md). The backend's engine is a
 * Swarm manager; a task bound as the main task of an executor becomes a service:
 * - Mode replicated, 1 replica; restart condition `none` for a one-shot task, `any` for a daemon
 *   (`on-failure` when its spec asks for it); EndpointSpec `dnsrr`, no published ports;
 * - the image is pushed to a registry every node reaches (`<registry>/lessl/<image hex>`) first;
 * - a volume becomes a mount plus the placement constraint `node.id==<the manager's node>` (the
 *   volume lives on the backend's engine, the manager);
 * - the commit returns once Swarm has started the task (it records the node and the container);
 *   the exit code and state come from the service's task, the output from the service's logs;
 * - kill scales the service to 0 (Swarm stops the task: TERM, then KILL after the executor's
 *   `stopGraceSeconds`); the run's end removes the service.
 * What Swarm cannot do answers `Unsupported`: exec into a running executor, files from
 * credentials, networks other than `none`, and no-new-privileges when the engines do not set it.
 */
import * as E from 'fp-ts/lib/Either.js';
import { unsupported, type AnyError, type DeleteError, type Element, type TaskStatus } from '@lessl/core';
import type { CommitPlan, CompositionRecord, ExecutorDriver, Intent, PlanStep, RunSink } from '@lessl/kit';
import { commitPlan, destroyErrorOf, layoutOf, taskSpecOf, type FaultHook, type MainSteps, type Undo } from './commit-kit.js';
import type { Host } from './host.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { graceSecondsOf } from './executor-settings.js';
import { followService } from './swarm-follow.js';
import { SwarmExecutorOptionsC, type SwarmOptions } from './swarm-options.js';
import { SwarmServices } from './swarm-service.js';

export { removeDistributed, withSwarmCopies } from './swarm-copies.js';
export {
  SwarmExecutorOptionsC,
  SwarmOptionsC,
  type SwarmExecutorOptions,
  type SwarmNode,
  type SwarmOptions,
} from './swarm-options.js';
import { serviceIdOf } from './attributes.js';
export { SWARM_START_TIMEOUT_MS } from './swarm-service.js';

/** A Swarm executor's main service as a commit sees it (recorded, then changed by the steps). */
interface XState {
  serviceId: string | null;
  containerId: string | null;
  mainTask: string | null;
}

/** What the driver's parts share: the manager's services, and the runs followed. */
interface SwarmRuns {
  readonly services: SwarmServices;
  readonly followers: Set<{ stop(): void }>;
}

/** Creates the service of a main task and returns once Swarm has started it. */
const startMain = async (
  runs: SwarmRuns,
  plan: CommitPlan,
  sink: RunSink,
): Promise<E.Either<AnyError, { serviceId: string; containerId: string }>> => {
  const { services } = runs;
  const spec = await services.specOf(plan, sink);
  if (E.isLeft(spec)) return spec;
  let serviceId: string;
  try {
    serviceId = await services.create(spec.right);
  } catch (err) {
    if (!isDockerError(err)) throw err;
    return E.left(fromDocker(sink.task, err));
  }
  const first = await services.started(sink.task, serviceId).catch((err: unknown) => E.left(fromDocker(sink.task, err)));
  if (E.isLeft(first)) {
    await services.remove(serviceId).catch(() => undefined);
    return first;
  }
  const containerId = first.right.Status?.ContainerStatus?.ContainerID ?? '';
  sink.started({
    process: { serviceId, taskId: first.right.ID, nodeId: first.right.NodeID ?? null, containerId },
    kill: () => services.scaleToZero(serviceId),
  });
  followService(services, runs.followers, sink, serviceId, 0);
  return E.right({ serviceId, containerId });
};

/** The bind of a task: the main task of a new service (Swarm cannot exec into a running one). */
const bindTask = async (
  runs: SwarmRuns,
  plan: CommitPlan,
  step: PlanStep,
  x: XState,
  undo: Undo[],
): Promise<E.Either<AnyError, void>> => {
  if (x.serviceId !== null)
    return E.left(
      unsupported(
        step.id,
        'a task exec’d into a running Swarm executor',
        'Swarm has no exec into a task (it may run on another node); bind it on a stopped executor',
      ),
    );
  const spec = taskSpecOf(plan, step.id);
  if (E.isRight(spec) && (spec.right.ports ?? []).length > 0)
    return E.left(
      unsupported(step.id, 'spec.ports', 'a Swarm service’s task may run on another node: its ports are not reached'),
    );
  const r = await startMain(runs, plan, plan.runs.open(step.id));
  if (E.isLeft(r)) return r;
  Object.assign(x, { serviceId: r.right.serviceId, containerId: r.right.containerId, mainTask: step.id });
  undo.push(async () => void (await runs.services.stopMain(r.right.serviceId, 0)));
  return E.right(undefined);
};

/** The executor's service state, as recorded. */
const recorded = (a: Readonly<Record<string, unknown>>): XState => ({
  serviceId: typeof a.serviceId === 'string' && a.state === 'running' ? a.serviceId : null,
  containerId: typeof a.containerId === 'string' ? a.containerId : null,
  mainTask: typeof a.mainTask === 'string' ? a.mainTask : null,
});

/**
 * The Swarm steps of one commit. A stopped main task's service stays until the registry has the
 * commit (a failed write keeps it).
 */
const serviceSteps = (runs: SwarmRuns, plan: CommitPlan): MainSteps => {
  const x = recorded(plan.attributes);
  const graceSeconds = graceSecondsOf(plan.options);
  return {
    graceSeconds,
    storageFixed: 'Swarm cannot change the storage of a running service',
    running: () => x.serviceId !== null,
    mainOf: (task) => (x.mainTask === task ? x.serviceId : null),
    async stopMain(id) {
      const code = await runs.services.stopMain(id, graceSeconds, true);
      Object.assign(x, { serviceId: null, containerId: null, mainTask: null });
      return code;
    },
    bind: (step, undo) => bindTask(runs, plan, step, x, undo),
    describe: () => ({
      state: x.serviceId === null ? 'stopped' : 'running',
      serviceId: x.serviceId,
      // the task's container (on whichever node runs it)
      containerId: x.serviceId === null ? null : x.containerId,
      mainTask: x.serviceId === null ? null : x.mainTask,
      ...layoutOf(plan),
    }),
    remove: (id) => runs.services.remove(id),
  };
};

/** On open: follows a task's service again, or reports the task lost when its service is gone. */
const resume = async (runs: SwarmRuns, sink: RunSink, status: TaskStatus): Promise<void> => {
  const serviceId = status.process?.serviceId;
  const gone = { exitCode: null, reason: 'lost' as const, executor: { state: 'stopped', serviceId: null, mainTask: null } };
  if (typeof serviceId !== 'string') return void (await sink.end(gone));
  try {
    await runs.services.inspect(serviceId);
  } catch (err) {
    if (statusOf(err) === 404) return void (await sink.end(gone));
    throw err;
  }
  sink.started({ process: status.process ?? { serviceId }, kill: () => runs.services.scaleToZero(serviceId) });
  followService(runs.services, runs.followers, sink, serviceId, sink.kept);
};

/** The Swarm executor driver: executors are services on the Swarm `engine` manages. */
export const swarmExecutorDriver = (engine: Host, swarm: SwarmOptions, faults?: FaultHook): ExecutorDriver => {
  const runs: SwarmRuns = { services: new SwarmServices(engine, swarm), followers: new Set() };
  const { services } = runs;
  return {
    backendOptions: SwarmExecutorOptionsC,
    commit: (plan) => commitPlan(plan, faults, serviceSteps(runs, plan)),
    resume: (sink: RunSink, status: TaskStatus, _executor: Element) => resume(runs, sink, status),
    async undo(plan, attributes) {
      const id = serviceIdOf({ attributes });
      if (id !== undefined && id !== serviceIdOf(plan)) await services.stopMain(id, 0);
    },
    async destroy(el: Element, _comp: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>> {
      try {
        await services.removeAllOf(el.id.key);
        return E.right(undefined);
      } catch (err) {
        return E.left(destroyErrorOf(el.id.key, err));
      }
    },
    async recover(intent: Intent): Promise<void> {
      await services.removeAllOf(intent.id).catch(() => undefined);
    },
    async close() {
      for (const f of runs.followers) f.stop();
      runs.followers.clear();
    },
  };
};
