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
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import {
  invalidEntry,
  noopLogger,
  unavailable,
  unsupported,
  type AnyError,
  type DeleteError,
  type Element,
  type EndReason,
  type ExecutorOptions,
  type Logger,
  type TaskSpec,
  type TaskStatus,
} from '@lessl/core';
import type { CommitPlan, CompositionRecord, ElementDriver, ExecutorDriver, Intent, RunSink } from '@lessl/level';
import type { Engine } from './engine.js';
import { followJson } from './engine.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { clientFor, HostSpecC } from './hosts.js';
import {
  backendOf,
  commitSteps,
  containerBase,
  DEFAULTS,
  DockerExecutorOptionsC,
  envOf,
  layoutOf,
  storageChangeRefused,
  unbindTask,
  type StepApplier,
  type FaultHook,
} from './executor.js';
import { containerName, LABEL } from './names.js';
import { Demux } from './output.js';

/**
 * io-ts codec of the `swarm` option of `openDockerBackend`:
 * - `registry`: `host:port` of the registry every node pulls images from;
 * - `enginesSetNoNewPrivileges`: every node's engine runs with `"no-new-privileges": true` (Swarm
 *   on API 1.41 cannot ask for it per service, and `docker info` does not say it). Without it, an
 *   executor must allow new privileges explicitly (`options.backend.allowNewPrivileges`);
 * - `nodes`: the engines of the worker nodes (`{ name, url, tls? }`, as a host of `hosts`): deleting
 *   an image removes the copies those nodes pulled through them (Swarm has no call for it).
 */
export const SwarmOptionsC = t.exact(
  t.intersection([
    t.type({ registry: t.refinement(t.string, (r) => /^[a-z0-9.-]+(:\d+)?$/i.test(r), 'Registry') }),
    t.partial({
      enginesSetNoNewPrivileges: t.boolean,
      nodes: t.array(
        t.exact(
          t.intersection([
            t.type({ name: HostSpecC.type.types[0].props.name, url: HostSpecC.type.types[1].props.url }),
            t.partial({ tls: HostSpecC.type.types[1].props.tls }),
          ]),
        ),
      ),
    }),
  ]),
);
/** A Swarm node's engine (`swarm.nodes`): where the copies it pulled are removed. */
export type SwarmNode = NonNullable<t.TypeOf<typeof SwarmOptionsC>['nodes']>[number];
/** Run executors as Swarm services (see `SwarmOptionsC`). */
export type SwarmOptions = t.TypeOf<typeof SwarmOptionsC>;

/**
 * io-ts codec of a Swarm executor's backend options: the container driver's, plus `constraints`,
 * Swarm placement constraints added to the service (e.g. `node.hostname==s2`).
 */
export const SwarmExecutorOptionsC = t.partial({
  ...DockerExecutorOptionsC.props,
  constraints: t.array(t.refinement(t.string, (c) => /^[\w.-]+\s*(==|!=)\s*\S+$/.test(c), 'Constraint')),
});
/** Backend options of a Swarm executor (`ExecutorOptions.backend`). */
export type SwarmExecutorOptions = t.TypeOf<typeof SwarmExecutorOptionsC>;

/** How long a created service may wait for Swarm to start its task before the commit gives up. */
export const SWARM_START_TIMEOUT_MS = 60_000;
/** How often a running task's state is read. */
const POLL_MS = 200;

/** A Swarm task as the API answers it (the fields read here). */
interface SwarmTask {
  readonly ID: string;
  readonly NodeID?: string;
  readonly CreatedAt?: string;
  readonly DesiredState?: string;
  readonly Status?: {
    readonly State?: string;
    readonly Err?: string;
    readonly ContainerStatus?: { readonly ContainerID?: string; readonly ExitCode?: number };
  };
}

/** Task states after which the container does not run any more. */
const FINAL = new Set(['complete', 'failed', 'shutdown', 'rejected', 'orphaned', 'remove']);
/** Task states in which the container has started (or ran and ended). */
const STARTED = new Set(['running', 'complete', 'failed', 'shutdown']);

/** The placement constraints an executor asks for (validated at `handle`). */
const constraintsOf = (o: ExecutorOptions): string[] => {
  const r = SwarmExecutorOptionsC.decode(o.backend ?? {});
  return E.isRight(r) ? [...(r.right.constraints ?? [])] : [];
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hexOf = (imageId: string): string => imageId.replace(/^sha256:/, '');

/** The restart policy of a task's service: none for one-shot tasks, any for daemons (or the spec's). */
const restartOf = (spec: TaskSpec): { Condition: 'none' | 'any' | 'on-failure'; MaxAttempts?: number } => {
  if (spec.daemon !== true || spec.restart?.policy === 'never') return { Condition: 'none' };
  if (spec.restart?.policy === 'on-failure') return { Condition: 'on-failure', MaxAttempts: spec.restart.maxRetries ?? 0 };
  return { Condition: 'any' };
};

/** Images pushed to the Swarm's registry, per manager engine (pushed once; forgotten when removed). */
const pushedBy = new WeakMap<Engine, Set<string>>();

/** `<registry>/lessl/<image hex>:latest`: where the Swarm driver pushes an image. */
const distributedRef = (swarm: SwarmOptions, imageId: string): { repo: string; ref: string } => {
  const repo = `${swarm.registry}/lessl/${hexOf(imageId)}`;
  return { repo, ref: `${repo}:latest` };
};

/** Deletes a manifest from a registry (https first, then plain http as Docker does for an insecure registry). */
const deleteManifest = async (registry: string, name: string, tag: string): Promise<void> => {
  const accept = 'application/vnd.docker.distribution.manifest.v2+json';
  for (const scheme of ['https', 'http']) {
    try {
      const base = `${scheme}://${registry}/v2/${name}/manifests`;
      const head = await fetch(`${base}/${tag}`, {
        method: 'HEAD',
        headers: { Accept: accept },
        signal: AbortSignal.timeout(10_000),
      });
      const digest = head.headers.get('docker-content-digest');
      if (head.ok && digest !== null) await fetch(`${base}/${digest}`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) });
      return;
    } catch {
      // not this scheme (or the registry did not answer): the next, else the copy stays
    }
  }
};

/**
 * Removes every reference of `repo` an engine holds to an image: its tag and the digests a node's
 * pull by digest left (Swarm pins a service's image as `<repo>@sha256:...`), so that the copy goes
 * once nothing else names it. A node removes a removed service's containers a little later: a copy
 * still in use is tried again for `waitMs`. Never fails: what cannot be removed stays.
 */
const removeCopy = async (docker: Docker, repo: string, imageId: string, waitMs = 0): Promise<void> => {
  const info = await docker
    .getImage(imageId)
    .inspect()
    .catch(() => undefined);
  const refs = [`${repo}:latest`, ...(info?.RepoDigests ?? []).filter((d) => d.startsWith(`${repo}@`))];
  for (const ref of refs) await removeRef(docker, ref, Date.now() + waitMs);
};

/** Removes one image reference; while a finished task's container still holds it (409), tries again until `deadline`. */
const removeRef = async (docker: Docker, ref: string, deadline: number): Promise<void> => {
  for (;;) {
    const err: unknown = await docker
      .getImage(ref)
      .remove({ noprune: false })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    if (statusOf(err) !== 409 || Date.now() >= deadline) return;
    await sleep(POLL_MS);
  }
};

/** How long the removal of a node's copy may take before it is given up (and logged). */
const NODE_TIMEOUT_MS = 10_000;

/** True when `p` settles well within `ms`; false when it fails or takes longer. */
const within = async (ms: number, p: Promise<unknown>): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  const ok = await Promise.race([
    p.then(
      () => true,
      () => false,
    ),
    late,
  ]);
  clearTimeout(timer);
  return ok;
};

/**
 * Removes the copies a Swarm node pulled, through its engine (`swarm.nodes`). A node that cannot
 * be reached is logged and skipped: the delete does not fail for it.
 */
const removeNodeCopies = async (nodes: readonly SwarmNode[], repo: string, imageId: string, log: Logger): Promise<void> => {
  for (const node of nodes) {
    const c = clientFor(node);
    const done =
      E.isRight(c) &&
      (await within(
        NODE_TIMEOUT_MS,
        c.right.ping().then(() => removeCopy(c.right, repo, imageId, NODE_TIMEOUT_MS - 1000)),
      ));
    if (!done)
      log.warn({ node: node.name, url: node.url, imageId }, 'swarm: a node could not be reached; its copy of the image stays');
  }
};

/**
 * Removes the copies of an image the Swarm driver made: its tag on the manager, the copies the
 * nodes of `swarm.nodes` pulled, and its manifest in the registry (which must allow deletes:
 * `storage.delete.enabled: true`; its garbage collector then frees the layers). Never fails: what
 * cannot be removed stays (a node that cannot be reached is logged).
 */
export const removeDistributed = async (
  engine: Engine,
  swarm: SwarmOptions,
  imageId: string,
  log: Logger = noopLogger,
): Promise<void> => {
  if (imageId === '') return;
  const { repo, ref } = distributedRef(swarm, imageId);
  pushedBy.get(engine)?.delete(ref);
  engine.expected.add(imageId);
  await removeCopy(engine.docker, repo, imageId);
  await removeNodeCopies(swarm.nodes ?? [], repo, imageId, log);
  await deleteManifest(swarm.registry, `lessl/${hexOf(imageId)}`, 'latest');
};

/**
 * An image driver that also removes an image's Swarm copies (`removeDistributed`) once its
 * element's image is removed, unless another element has the same content (`sameContent`).
 */
export const withSwarmCopies = (
  driver: ElementDriver,
  engine: Engine,
  swarm: SwarmOptions,
  sameContent: (el: Element) => boolean,
  log: Logger = noopLogger,
): ElementDriver => ({
  ...driver,
  async destroy(el) {
    const r = await driver.destroy(el);
    if (E.isRight(r) && !sameContent(el)) await removeDistributed(engine, swarm, String(el.attributes.imageId ?? ''), log);
    return r;
  },
});

/** The Swarm executor driver: executors are services on the Swarm `engine` manages. */
export const swarmExecutorDriver = (engine: Engine, swarm: SwarmOptions, faults?: FaultHook): ExecutorDriver => {
  const d = engine.docker;
  let pushed = pushedBy.get(engine);
  if (pushed === undefined) pushedBy.set(engine, (pushed = new Set()));
  const pushedRefs = pushed;
  const followers = new Set<{ stop(): void }>();
  let self: Promise<{ nodeId: string }> | undefined;

  /** The manager's node (where the backend's volumes live). */
  const manager = (): Promise<{ nodeId: string }> => {
    self ??= d.info().then((i: { Swarm?: { NodeID?: string; ControlAvailable?: boolean } }) => {
      if (i.Swarm?.ControlAvailable !== true || i.Swarm.NodeID === undefined)
        throw new Error('the backend’s engine is not a Swarm manager');
      return { nodeId: i.Swarm.NodeID };
    });
    self.catch(() => (self = undefined));
    return self;
  };

  const tasksOf = async (serviceId: string): Promise<SwarmTask[]> => {
    const ts = (await d.listTasks({ filters: { service: [serviceId] } })) as SwarmTask[];
    return [...ts].sort((a, b) => String(a.CreatedAt).localeCompare(String(b.CreatedAt)));
  };

  const removeService = async (serviceId: string): Promise<void> => {
    await d
      .getService(serviceId)
      .remove()
      .catch((err: unknown) => {
        if (statusOf(err) !== 404) throw err;
      });
  };

  /** Pushes an image to the registry every node reaches (once per driver; the registry skips layers it has). */
  const distribute = async (task: string, imageId: string): Promise<E.Either<AnyError, string>> => {
    const { repo, ref } = distributedRef(swarm, imageId);
    if (pushedRefs.has(ref)) return E.right(ref);
    try {
      await d.getImage(imageId).tag({ repo, tag: 'latest' });
      const s = (await d.getImage(ref).push({ authconfig: { serveraddress: swarm.registry } })) as NodeJS.ReadableStream;
      const r = await followJson(s);
      if (r.error !== undefined)
        return E.left(unavailable(task, `could not push the image to the Swarm's registry ${swarm.registry}: ${r.error}`));
    } catch (err) {
      return E.left(fromDocker(task, err));
    }
    pushedRefs.add(ref);
    return E.right(ref);
  };

  /** The service of a task; Left for what Swarm cannot do (naming the field). */
  const serviceSpec = async (plan: CommitPlan, sink: RunSink): Promise<E.Either<AnyError, Docker.CreateServiceOptions>> => {
    const { task, spec } = sink;
    const o = plan.options;
    const b = backendOf(o);
    const no = (what: string, why: string): E.Either<AnyError, never> => E.left(unsupported(task, what, why));
    if (o.network !== undefined && o.network !== 'none')
      return no('options.network', 'Swarm executors have no network (`none`); services with networks are not mapped yet');
    if (sink.secrets.files.length > 0)
      return no('spec.credentials', 'Swarm cannot put files into a task’s container before it starts; use env credentials');
    const m = await manager();
    if (b.allowNewPrivileges !== true && swarm.enginesSetNoNewPrivileges !== true)
      return no(
        'options.backend.allowNewPrivileges',
        'Swarm (API 1.41) cannot set no-new-privileges per service: run every engine with `"no-new-privileges": true` and open the backend with `swarm.enginesSetNoNewPrivileges`, or allow new privileges',
      );
    const image = plan.after.find((x) => x.id.kind === 'image');
    if (image === undefined)
      return E.left(
        invalidEntry(
          `no storage is mapped to /: ${plan.executor.key} has no image joined as its root filesystem`,
          plan.executor.key,
          ['rootfs'],
        ),
      );
    const pushedRef = await distribute(task, String(plan.elements.get(image.id.key)?.attributes.imageId ?? ''));
    if (E.isLeft(pushedRef)) return pushedRef;
    const volumes = plan.after.filter((x) => x.id.kind === 'volume');
    const mounts = volumes.map((x) => ({
      Type: 'volume' as const,
      Source: String(plan.elements.get(x.id.key)?.attributes.volumeName ?? ''),
      Target: x.mountpoint ?? '/data',
      ReadOnly: x.readOnly,
    }));
    // the container driver's settings, translated: what Swarm has a field for
    const host = containerBase(pushedRef.right, o, spec.limits ?? {}, mounts).HostConfig;
    const labels = { [LABEL.id]: plan.executor.key, [LABEL.registry]: engine.instance, [LABEL.task]: task };
    const grace = b.stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;
    // a volume lives on the manager's engine: its executor runs there
    const constraints = [...(volumes.length === 0 ? [] : [`node.id==${m.nodeId}`]), ...constraintsOf(o)];
    return E.right({
      Name: containerName(engine.instance, plan.executor, randomBytes(3).toString('hex')),
      Labels: labels,
      TaskTemplate: {
        ContainerSpec: {
          Image: pushedRef.right,
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
      },
      Mode: { Replicated: { Replicas: 1 } },
      EndpointSpec: { Mode: 'dnsrr' },
    });
  };

  /** Waits until Swarm has started the service's task; Left when it refused it or none could run it. */
  const started = async (task: string, serviceId: string): Promise<E.Either<AnyError, SwarmTask>> => {
    const until = Date.now() + SWARM_START_TIMEOUT_MS;
    while (Date.now() < until) {
      const ts = await tasksOf(serviceId);
      const last = ts[ts.length - 1];
      const state = last?.Status?.State ?? '';
      if (last !== undefined && STARTED.has(state) && last.Status?.ContainerStatus?.ContainerID !== undefined)
        return E.right(last);
      if (last !== undefined && FINAL.has(state))
        return E.left(invalidEntry(`task ${task} cannot start on Swarm: ${last.Status?.Err ?? state}`, task, ['spec.cmd']));
      await sleep(100);
    }
    return E.left(unavailable(task, `no Swarm node started task ${task} within ${SWARM_START_TIMEOUT_MS} ms`));
  };

  /** The service's log, live or to its current end. */
  const logStream = async (serviceId: string, follow: boolean): Promise<Readable> => {
    const got = (await d.getService(serviceId).logs({ follow, stdout: true, stderr: true } as { follow: true })) as unknown;
    return Buffer.isBuffer(got) ? Readable.from([got]) : (got as Readable);
  };

  /**
   * Follows a service's task to its end: output from the service's log as it arrives; once the
   * task is final (and Swarm will not start another), the rest of the log, then the exit code
   * from the task; the service is removed once the end is durable.
   */
  const follow = (sink: RunSink, serviceId: string, skip: number): void => {
    const reads = sink.spec.log?.destination !== 'none';
    let delivered = skip;
    const out = (s: 'stdout' | 'stderr', data: Uint8Array): void => {
      delivered += data.length;
      sink.output(s, data);
    };
    let live: Readable | undefined;
    let stopped = false;
    const handle = {
      stop: () => {
        stopped = true;
        live?.destroy();
      },
    };
    followers.add(handle);
    const policy = restartOf(sink.spec);
    const ended = async (): Promise<{ exitCode: number | null; reason: EndReason } | undefined> => {
      let ts: SwarmTask[];
      try {
        ts = await tasksOf(serviceId);
        const svc = (await d.getService(serviceId).inspect()) as { Spec?: Docker.ServiceSpec };
        const last = ts[ts.length - 1];
        if (last === undefined || !FINAL.has(last.Status?.State ?? '')) return undefined;
        const exitCode = last.Status?.ContainerStatus?.ExitCode ?? null;
        const scaledDown = svc.Spec?.Mode?.Replicated?.Replicas === 0;
        const gaveUp =
          policy.Condition === 'none' ||
          (policy.Condition === 'on-failure' &&
            (exitCode === 0 || ((policy.MaxAttempts ?? 0) > 0 && ts.length > (policy.MaxAttempts ?? 0))));
        if (!scaledDown && !gaveUp) return undefined;
        if (ts.some((x) => !FINAL.has(x.Status?.State ?? ''))) return undefined;
        return { exitCode, reason: 'exited' };
      } catch (err) {
        if (statusOf(err) === 404) return { exitCode: null, reason: 'lost' };
        return undefined; // the manager did not answer this time: ask again (close() stops asking)
      }
    };
    const run = async (): Promise<void> => {
      const demux = new Demux(out, skip);
      if (reads) {
        live = await logStream(serviceId, true);
        if (stopped) live.destroy();
        void demux.drain(live);
      }
      let end: { exitCode: number | null; reason: EndReason } | undefined;
      while (!stopped && (end = await ended()) === undefined) await sleep(POLL_MS);
      live?.destroy();
      if (stopped || end === undefined) return;
      if (reads && end.reason !== 'lost') {
        const rest = new Demux(out, delivered);
        await rest.drain(await logStream(serviceId, false));
        if (end.reason === 'exited' && rest.notFound(end.exitCode)) end.reason = 'not-found';
      }
      followers.delete(handle);
      await sink.end({
        exitCode: end.exitCode,
        reason: end.reason,
        executor: { state: 'stopped', serviceId: null, containerId: null, mainTask: null },
        cleanup: () => removeService(serviceId),
      });
    };
    void run().catch(() => followers.delete(handle));
  };

  /** Stops a service's task: scale to 0 (Swarm sends TERM, then KILL after the stop grace period). */
  const scaleToZero = async (serviceId: string): Promise<void> => {
    try {
      const s = d.getService(serviceId);
      const info = (await s.inspect()) as { Version: { Index: number }; Spec: Docker.ServiceSpec };
      if (info.Spec.Mode?.Replicated?.Replicas === 0) return;
      await s.update({ version: info.Version.Index, ...info.Spec, Mode: { Replicated: { Replicas: 0 } } });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  };

  /** Creates the service of a main task and returns once Swarm has started it. */
  const startMain = async (
    plan: CommitPlan,
    sink: RunSink,
  ): Promise<E.Either<AnyError, { serviceId: string; containerId: string }>> => {
    const spec = await serviceSpec(plan, sink);
    if (E.isLeft(spec)) return spec;
    let serviceId: string;
    try {
      serviceId = (await d.createService(spec.right)).id;
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(fromDocker(sink.task, err));
    }
    const first = await started(sink.task, serviceId).catch((err: unknown) => E.left(fromDocker(sink.task, err)));
    if (E.isLeft(first)) {
      await removeService(serviceId).catch(() => undefined);
      return first;
    }
    const containerId = first.right.Status?.ContainerStatus?.ContainerID ?? '';
    sink.started({
      process: { serviceId, taskId: first.right.ID, nodeId: first.right.NodeID ?? null, containerId },
      kill: () => scaleToZero(serviceId),
    });
    follow(sink, serviceId, 0);
    return E.right({ serviceId, containerId });
  };

  /** Stops a main task's service and removes it; answers the exit code. */
  /** Scales a main task's service to zero and waits for its end; removes the service, or keeps it in `retired`. */
  const stopMain = async (serviceId: string, graceSeconds: number, retired?: string[]): Promise<number | null> => {
    await scaleToZero(serviceId);
    const until = Date.now() + graceSeconds * 1000 + 10_000;
    let code: number | null = null;
    while (Date.now() < until) {
      const ts = await tasksOf(serviceId).catch(() => []);
      if (ts.every((x) => FINAL.has(x.Status?.State ?? ''))) {
        code = ts[ts.length - 1]?.Status?.ContainerStatus?.ExitCode ?? null;
        break;
      }
      await sleep(POLL_MS);
    }
    if (retired === undefined) await removeService(serviceId);
    else retired.push(serviceId);
    return code;
  };

  interface XState {
    serviceId: string | null;
    containerId: string | null;
    mainTask: string | null;
    /** Services of stopped main tasks, removed once the registry has the commit. */
    retired: string[];
  }

  /** One step of a commit on executor state `x`; answers an error to roll back, or the step's result. */
  const stepper =
    (plan: CommitPlan, x: XState, grace: number): StepApplier =>
    async (step, undo) => {
      const kind = step.member?.id.kind;
      const refused = storageChangeRefused(step, x.serviceId !== null, 'Swarm cannot change the storage of a running service');
      if (refused !== undefined) return E.left(refused);
      if (step.op === 'unbind' && kind === 'task') {
        const sid = x.mainTask === step.id ? x.serviceId : null;
        const stop = async (): Promise<number | null> => {
          const code = sid === null ? null : await stopMain(sid, grace, x.retired);
          Object.assign(x, { serviceId: null, containerId: null, mainTask: null });
          return code;
        };
        return E.right(await unbindTask(plan, step, grace, sid === null ? undefined : stop));
      }
      if (step.op !== 'bind' || kind !== 'task') return E.right({ id: step.id, op: step.op, status: 'SUCCESS' });
      if (x.serviceId !== null)
        return E.left(
          unsupported(
            step.id,
            'a task exec’d into a running Swarm executor',
            'Swarm has no exec into a task (it may run on another node); bind it on a stopped executor',
          ),
        );
      const r = await startMain(plan, plan.runs.open(step.id));
      if (E.isLeft(r)) return r;
      Object.assign(x, { serviceId: r.right.serviceId, containerId: r.right.containerId, mainTask: step.id });
      undo.push(async () => {
        await stopMain(r.right.serviceId, 0);
      });
      return E.right({ id: step.id, op: step.op, status: 'SUCCESS' });
    };

  const removeServicesOf = async (key: string): Promise<void> => {
    const ss = await d.listServices({ filters: { label: [`${LABEL.id}=${key}`, `${LABEL.registry}=${engine.instance}`] } });
    for (const s of ss) await removeService(String(s.ID));
  };

  return {
    backendOptions: SwarmExecutorOptionsC,
    async commit(plan) {
      const a = plan.attributes;
      const x: XState = {
        serviceId: typeof a.serviceId === 'string' && a.state === 'running' ? a.serviceId : null,
        containerId: typeof a.containerId === 'string' ? a.containerId : null,
        mainTask: typeof a.mainTask === 'string' ? a.mainTask : null,
        retired: [],
      };
      const grace = backendOf(plan.options).stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;
      const r = await commitSteps(plan, faults, stepper(plan, x, grace), () => ({
        state: x.serviceId === null ? 'stopped' : 'running',
        serviceId: x.serviceId,
        // the task's container (on whichever node runs it)
        containerId: x.serviceId === null ? null : x.containerId,
        mainTask: x.serviceId === null ? null : x.mainTask,
        ...layoutOf(plan),
      }));
      // a stopped main task's service stays until the registry has the commit (a failed write keeps it)
      if (E.isLeft(r) || x.retired.length === 0) return r;
      return E.right({ ...r.right, retire: async () => void (await Promise.all(x.retired.map(removeService))) });
    },
    async resume(sink: RunSink, status: TaskStatus, _executor: Element): Promise<void> {
      const serviceId = status.process?.serviceId;
      const gone = { exitCode: null, reason: 'lost' as const, executor: { state: 'stopped', serviceId: null, mainTask: null } };
      if (typeof serviceId !== 'string') return void (await sink.end(gone));
      try {
        await d.getService(serviceId).inspect();
      } catch (err) {
        if (statusOf(err) === 404) return void (await sink.end(gone));
        throw err;
      }
      sink.started({ process: status.process ?? { serviceId }, kill: () => scaleToZero(serviceId) });
      follow(sink, serviceId, sink.kept);
    },
    async undo(plan, attributes) {
      const id = attributes.serviceId;
      if (typeof id === 'string' && id !== plan.attributes.serviceId) await stopMain(id, 0);
    },
    async destroy(el: Element, _comp: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>> {
      try {
        await removeServicesOf(el.id.key);
        return E.right(undefined);
      } catch (err) {
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async recover(intent: Intent): Promise<void> {
      await removeServicesOf(intent.id).catch(() => undefined);
    },
    async close() {
      for (const f of followers) f.stop();
      followers.clear();
    },
  };
};
