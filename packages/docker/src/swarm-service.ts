/**
 * The services of a Swarm executor's main tasks: what a task's service is (its spec, or what
 * Swarm cannot do for it), and the calls on it: create and wait for its task to start, read its
 * tasks and log, scale it to zero, remove it.
 */
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, unavailable, unsupported, type AnyError, type TaskSpec } from '@lessl/core';
import type { CommitPlan, RunSink } from '@lessl/kit';
import type { ServiceInfo, ServicesClient, ServiceTask } from './client/index.js';
import { statusOf } from './errors.js';
import type { Host } from './host.js';
import {
  backendOf,
  containerBase,
  DEFAULTS,
  envOf,
  imageIdOf,
  rootImageOf,
  runLabels,
  runName,
  volumeMounts,
} from './executor-settings.js';
import { readableOf } from './output.js';
import { distribute } from './swarm-copies.js';
import { constraintsOf, type SwarmOptions } from './swarm-options.js';

/** How long a created service may wait for Swarm to start its task before the commit gives up. */
export const SWARM_START_TIMEOUT_MS = 60_000;
/** How often a running task's state is read. */
export const POLL_MS = 200;

/** A Swarm task as the API answers it (the fields read here). */
export type SwarmTask = ServiceTask;

/** Task states after which the container does not run any more. */
const FINAL = new Set(['complete', 'failed', 'shutdown', 'rejected', 'orphaned', 'remove']);
/** Task states in which the container has started (or ran and ended). */
const STARTED = new Set(['running', 'complete', 'failed', 'shutdown']);

/** True once a Swarm task's container does not run any more. */
export const isFinal = (task: SwarmTask | undefined): boolean => FINAL.has(task?.Status?.State ?? '');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The restart policy of a task's service: none for one-shot tasks, any for daemons (or the spec's). */
export const restartOf = (spec: TaskSpec): { Condition: 'none' | 'any' | 'on-failure'; MaxAttempts?: number } => {
  if (spec.daemon !== true || spec.restart?.policy === 'never') return { Condition: 'none' };
  if (spec.restart?.policy === 'on-failure') return { Condition: 'on-failure', MaxAttempts: spec.restart.maxRetries ?? 0 };
  return { Condition: 'any' };
};

/** What Swarm cannot run before it is asked anything: input, a network, credential files. */
const refusedUpFront = (plan: CommitPlan, sink: RunSink): AnyError | undefined => {
  const o = plan.options;
  if (sink.stdin !== undefined)
    return unsupported(sink.task, 'spec.interaction.stdin', 'a Swarm service has no stdin to attach: run the task on an engine');
  if (o.network !== undefined && o.network !== 'none')
    return unsupported(
      sink.task,
      'options.network',
      'Swarm executors have no network (`none`); services with networks are not mapped yet',
    );
  if (sink.secrets.files.length > 0)
    return unsupported(
      sink.task,
      'spec.credentials',
      'Swarm cannot put files into a task’s container before it starts; use env credentials',
    );
  return undefined;
};

/** No-new-privileges asked for where the engines do not set it (Swarm cannot, per service). */
const refusedPrivileges = (plan: CommitPlan, sink: RunSink, swarm: SwarmOptions): AnyError | undefined => {
  if (backendOf(plan.options).allowNewPrivileges === true || swarm.enginesSetNoNewPrivileges === true) return undefined;
  return unsupported(
    sink.task,
    'options.backend.allowNewPrivileges',
    'Swarm (API 1.41) cannot set no-new-privileges per service: run every engine with `"no-new-privileges": true` and open the backend with `swarm.enginesSetNoNewPrivileges`, or allow new privileges',
  );
};

/** The task template of a task's service: the container driver's settings, translated to what Swarm has a field for. */
const taskTemplate = (plan: CommitPlan, sink: RunSink, image: string, constraints: string[]): Docker.TaskSpec => {
  const { spec } = sink;
  const host = containerBase(image, plan.options, spec.limits ?? {}, volumeMounts(plan)).HostConfig;
  const grace = backendOf(plan.options).stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;
  return {
    ContainerSpec: {
      Image: image,
      Command: [...spec.cmd],
      Env: envOf(sink),
      ...(spec.pwd === undefined ? {} : { Dir: spec.pwd }),
      ...(spec.user === undefined ? {} : { User: spec.user }),
      Init: host.Init,
      ReadOnly: host.ReadonlyRootfs,
      CapabilityDrop: host.CapDrop,
      CapabilityAdd: host.CapAdd,
      StopGracePeriod: grace * 1e9,
      Mounts: host.Mounts,
    },
    Resources: {
      Limits: {
        MemoryBytes: host.Memory,
        Pids: host.PidsLimit,
        ...(host.NanoCpus === undefined ? {} : { NanoCPUs: host.NanoCpus }),
      },
    },
    RestartPolicy: restartOf(spec),
    ...(constraints.length === 0 ? {} : { Placement: { Constraints: constraints } }),
    ...(spec.log?.destination === 'none' ? { LogDriver: { Name: 'none' } } : {}),
  };
};

/** The services of one Swarm manager engine. */
export class SwarmServices {
  private self: Promise<{ nodeId: string }> | undefined;

  constructor(
    readonly engine: Host,
    readonly swarm: SwarmOptions,
  ) {}

  /** The manager's services. */
  get services(): ServicesClient {
    return this.engine.clients.services;
  }

  /** The manager's node (where the backend's volumes live). */
  manager(): Promise<{ nodeId: string }> {
    const self = (this.self ??= this.engine.clients.system.info().then((i) => {
      if (i.Swarm?.ControlAvailable !== true || i.Swarm.NodeID === undefined)
        throw new Error('the backend’s engine is not a Swarm manager');
      return { nodeId: i.Swarm.NodeID };
    }));
    self.catch(() => (this.self = undefined));
    return self;
  }

  /** The service of a task; Left for what Swarm cannot do (naming the field). */
  async specOf(plan: CommitPlan, sink: RunSink): Promise<E.Either<AnyError, Docker.CreateServiceOptions>> {
    const refused = refusedUpFront(plan, sink);
    if (refused !== undefined) return E.left(refused);
    const m = await this.manager();
    const privileges = refusedPrivileges(plan, sink, this.swarm);
    if (privileges !== undefined) return E.left(privileges);
    const image = rootImageOf(plan);
    if (E.isLeft(image)) return image;
    const pushedRef = await distribute(this.engine, this.swarm, sink.task, imageIdOf(plan, image.right));
    if (E.isLeft(pushedRef)) return pushedRef;
    // a volume lives on the manager's engine: its executor runs there
    const onManager = plan.after.some((x) => x.id.kind === 'volume') ? [`node.id==${m.nodeId}`] : [];
    return E.right({
      Name: runName(this.engine.instance, plan),
      Labels: runLabels(this.engine.instance, plan, sink.task),
      TaskTemplate: taskTemplate(plan, sink, pushedRef.right, [
        ...onManager,
        ...(this.swarm.constraints ?? []),
        ...constraintsOf(plan.options),
      ]),
      Mode: { Replicated: { Replicas: 1 } },
      EndpointSpec: { Mode: 'dnsrr' },
    });
  }

  /** Creates a service; answers its ID. */
  create(spec: Docker.CreateServiceOptions): Promise<string> {
    return this.services.create(spec);
  }

  /** A service's tasks, oldest first. */
  async tasksOf(serviceId: string): Promise<SwarmTask[]> {
    const ts = await this.services.tasks(serviceId);
    return [...ts].sort((a, b) => String(a.CreatedAt).localeCompare(String(b.CreatedAt)));
  }

  /** A service's spec and version. */
  async inspect(serviceId: string): Promise<ServiceInfo> {
    return this.services.inspect(serviceId);
  }

  /** Removes a service (gone is fine). */
  async remove(serviceId: string): Promise<void> {
    await this.services.remove(serviceId).catch((err: unknown) => {
      if (statusOf(err) !== 404) throw err;
    });
  }

  /** Removes the services of an executor. */
  async removeAllOf(key: string): Promise<void> {
    const ss = await this.services.listOf(key);
    for (const s of ss) await this.remove(String(s.ID));
  }

  /** Waits until Swarm has started the service's task; Left when it refused it or none could run it. */
  async started(task: string, serviceId: string): Promise<E.Either<AnyError, SwarmTask>> {
    const until = Date.now() + SWARM_START_TIMEOUT_MS;
    while (Date.now() < until) {
      const ts = await this.tasksOf(serviceId);
      const last = ts[ts.length - 1];
      const state = last?.Status?.State ?? '';
      if (last !== undefined && STARTED.has(state) && last.Status?.ContainerStatus?.ContainerID !== undefined)
        return E.right(last);
      if (last !== undefined && FINAL.has(state))
        return E.left(invalidEntry(`task ${task} cannot start on Swarm: ${last.Status?.Err ?? state}`, task, ['spec.cmd']));
      await sleep(100);
    }
    return E.left(unavailable(task, `no Swarm node started task ${task} within ${SWARM_START_TIMEOUT_MS} ms`));
  }

  /** The service's log, live or to its current end. */
  async logStream(serviceId: string, follow: boolean): Promise<Readable> {
    return readableOf(await this.services.logs(serviceId, { follow, stdout: true, stderr: true }));
  }

  /** Stops a service's task: scale to 0 (Swarm sends TERM, then KILL after the stop grace period). */
  async scaleToZero(serviceId: string): Promise<void> {
    try {
      const info = await this.inspect(serviceId);
      if (info.Spec.Mode?.Replicated?.Replicas === 0) return;
      await this.services.update(serviceId, info.Version.Index, { ...info.Spec, Mode: { Replicated: { Replicas: 0 } } });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  /** Scales a main task's service to zero and waits for its end; removes the service (unless `keep`); answers its exit code. */
  async stopMain(serviceId: string, graceSeconds: number, keep = false): Promise<number | null> {
    await this.scaleToZero(serviceId);
    const until = Date.now() + graceSeconds * 1000 + 10_000;
    let code: number | null = null;
    while (Date.now() < until) {
      const ts = await this.tasksOf(serviceId).catch(() => []);
      if (ts.every((x) => FINAL.has(x.Status?.State ?? ''))) {
        code = ts[ts.length - 1]?.Status?.ContainerStatus?.ExitCode ?? null;
        break;
      }
      await sleep(POLL_MS);
    }
    if (!keep) await this.remove(serviceId);
    return code;
  }
}
