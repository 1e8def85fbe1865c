/**
 * Drivers over many hosts: each element lives on one host (`attributes.host`), and each call goes
 * to the per-host driver of that host (images.ts, volumes.ts, executor.ts, unchanged). New
 * elements are placed (placement.ts): an image or volume on the host the caller names
 * (`options.host`), else its parent's, else the least loaded; an executor where its volumes
 * live, else by placement, and its image follows it (transferred engine to engine with save/load).
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  fromUtf8,
  invalidEntry,
  runtimeError,
  type AnyError,
  type CreateError,
  type DeleteError,
  type Element,
  type ExecutorOptions,
} from '@lessl/core';
import type {
  CommitPlan,
  DriverCommit,
  DriverCreated,
  DriverCreateInput,
  ElementDriver,
  ExecutorDriver,
  RunSink,
} from '@lessl/kit';
import type { Host } from './host.js';
import { sinkOver } from './executor-follow.js';
import { followJson } from './streams.js';
import { fromDocker, statusOf } from './errors.js';
import { backendOf, DEFAULTS, DockerExecutorOptionsC, executorDriver, type FaultHook } from './executor.js';
import type { HostPool } from './hosts.js';
import { ownerOfHost } from './placement.js';
import { imageDriver } from './images.js';
import type { EgressGuard } from './egress.js';
import { volumeDriver } from './volumes.js';
import { containerIdOf, imageIdOf, imageRefOf } from './attributes.js';

/** One driver per host, made on first use. */
const perHost = <D>(make: (e: Host) => D): ((e: Host) => D) => {
  const made = new Map<Host, D>();
  return (e) => {
    let d = made.get(e);
    if (d === undefined) made.set(e, (d = make(e)));
    return d;
  };
};

/**
 * The host a new image or volume goes to: `options.host`, else its parent's, else the least
 * loaded shared host. A host of an owner (`lessl.owner`) takes only elements whose ro `owner` is
 * that owner, and only when named.
 */
const homeFor = (
  pool: HostPool,
  id: string,
  input: Pick<DriverCreateInput, 'options' | 'parent' | 'ro'>,
): E.Either<AnyError, Host> => {
  const { options, parent } = input;
  const pinned = options.host;
  if (pinned !== undefined) {
    if (typeof pinned !== 'string') return E.left(invalidEntry('options.host must be a host name', id, ['options.host']));
    const h = pool.usable(pinned, id);
    const owner = E.isRight(h) ? ownerOfHost(h.right) : undefined;
    if (owner !== undefined && owner !== fromUtf8(input.ro).owner)
      return E.left(invalidEntry(`host ${pinned} takes only the elements of its owner`, id, ['options.host']));
    return h;
  }
  if (parent !== undefined) return pool.usable(pool.of(parent).name, id);
  return pool.place(id, { memoryBytes: 0 });
};

/** Options without `host` (the per-host drivers do not take it). */
const withoutHost = (o: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> => {
  const { host: _host, ...rest } = o;
  return rest;
};

/** Creates an element on its home host (see `homeFor`) and records the host in its attributes. */
const createOnHome = async (
  pool: HostPool,
  of: (e: Host) => ElementDriver,
  input: DriverCreateInput,
  made?: (home: Host, created: DriverCreated) => void,
): Promise<E.Either<CreateError, DriverCreated>> => {
  const home = homeFor(pool, input.id.key, input);
  if (E.isLeft(home)) return home as E.Either<CreateError, never>;
  const r = await of(home.right).create({ ...input, options: withoutHost(input.options) });
  if (E.isLeft(r)) return r;
  made?.(home.right, r.right);
  return E.right({ ...r.right, attributes: { ...r.right.attributes, host: home.right.name } });
};

/** Images over many hosts: made on their home host, copied to others on demand, removed everywhere. */
export const routedImageDriver = (pool: HostPool, egress?: EgressGuard): ElementDriver => {
  const of = perHost((e) => imageDriver(e, egress));
  /** Hosts holding a copy of the image (its home first). */
  const holders = (el: Element): Host[] => {
    const home = pool.of(el);
    const id = imageIdOf(el);
    return [home, ...pool.all().filter((h) => h !== home && h.state !== 'removed' && h.images.has(id))];
  };
  return {
    external: true,
    supportsData: true,
    async create(input) {
      return createOnHome(pool, of, input, (home, made) => {
        const imageId = imageIdOf(made);
        if (imageId !== '') home.images.add(imageId);
      });
    },
    async destroy(el) {
      // copies first, then the home host's image (its removal is what the element's delete means)
      for (const h of holders(el).reverse()) {
        const r = await of(h).destroy(el);
        if (E.isLeft(r)) return r;
        h.images.delete(imageIdOf(el));
      }
      return E.right(undefined);
    },
    async references(el) {
      const users: string[] = [];
      for (const h of holders(el)) {
        const r = (await of(h).references?.(el)) ?? E.right([]);
        if (E.isLeft(r)) return r;
        users.push(...r.right.map((u) => (h === pool.primary && pool.all().length === 1 ? u : `${u}@${h.name}`)));
      }
      return E.right(users);
    },
    async recover(intent) {
      for (const h of pool.all()) if (h.state === 'active') await of(h).recover?.(intent);
    },
  };
};

/** Volumes over many hosts: each stays on the host it was made on. */
export const routedVolumeDriver = (pool: HostPool): ElementDriver => {
  const of = perHost(volumeDriver);
  return {
    external: true,
    supportsData: true,
    create: (input) => createOnHome(pool, of, input),
    destroy: (el) => of(pool.of(el)).destroy(el),
    async references(el) {
      return (await of(pool.of(el)).references?.(el)) ?? E.right([]);
    },
    async recover(intent) {
      for (const h of pool.all()) if (h.state === 'active') await of(h).recover?.(intent);
    },
  };
};

/** Copies of images being made, per host and image, so concurrent placements share one transfer. */
const transfers = new WeakMap<Host, Map<string, Promise<E.Either<AnyError, void>>>>();

/**
 * Makes an image present on `target`: already there, or copied from a host that has it (its
 * home first) with `docker save` / `docker load` streamed engine to engine.
 */
export const ensureImage = (pool: HostPool, target: Host, image: Element): Promise<E.Either<AnyError, void>> => {
  const imageId = imageIdOf(image);
  if (imageId === '' || target.images.has(imageId)) return Promise.resolve(E.right(undefined));
  let inFlight = transfers.get(target);
  if (inFlight === undefined) transfers.set(target, (inFlight = new Map()));
  const running = inFlight.get(imageId);
  if (running !== undefined) return running;
  const p = copyImage(pool, target, image, imageId).finally(() => inFlight.delete(imageId));
  inFlight.set(imageId, p);
  return p;
};

const copyImage = async (pool: HostPool, target: Host, image: Element, imageId: string): Promise<E.Either<AnyError, void>> => {
  const key = image.id.key;
  try {
    await target.clients.images.inspect(imageId);
    target.images.add(imageId);
    return E.right(undefined);
  } catch (err) {
    if (statusOf(err) !== 404) return E.left(fromDocker(key, err));
  }
  const home = pool.of(image);
  const others = pool.all().filter((h) => h !== home);
  // its home, then hosts known to hold it, then the rest (an image refreshed on another host)
  const sources = [home, ...others.filter((h) => h.images.has(imageId)), ...others.filter((h) => !h.images.has(imageId))].filter(
    (h) => h !== target && h.state === 'active',
  );
  const ref = imageRefOf(image) || imageId;
  let last: AnyError = runtimeError(key, `no host holds image ${imageId}`);
  for (const source of sources) {
    try {
      const archive = await source.clients.images.save(ref);
      const r = await followJson(await target.clients.images.load(archive));
      if (r.error !== undefined) throw new Error(r.error);
      await target.clients.images.inspect(imageId);
      target.images.add(imageId);
      return E.right(undefined);
    } catch (err) {
      last = fromDocker(key, err);
      last = { ...last, message: `copying ${key} from host ${source.name} to ${target.name}: ${last.message}` };
    }
  }
  return E.left(last);
};

/** Whether a commit starts a container (a bind on an executor with no running container). */
const startsContainer = (plan: CommitPlan): boolean =>
  plan.attributes.state !== 'running' && plan.steps.some((s) => s.op === 'bind' && s.member?.id.kind === 'task');

/**
 * Where an executor runs: its recorded host while it has a container; else where its volumes
 * live (all on one host), or the host its options pin, chosen among the rest by placement.
 */
const hostFor = (pool: HostPool, plan: CommitPlan): E.Either<AnyError, Host> => {
  const key = plan.executor.key;
  if (!startsContainer(plan) || containerIdOf(plan) !== undefined) return E.right(pool.of({ attributes: plan.attributes }));
  const volumeHosts = new Set<string>();
  for (const m of plan.after)
    if (m.id.kind === 'volume') {
      const el = plan.elements.get(m.id.key);
      if (el !== undefined) volumeHosts.add(pool.of(el).name);
    }
  if (volumeHosts.size > 1)
    return E.left(
      invalidEntry(
        `${key} mounts volumes that live on different hosts (${[...volumeHosts].join(', ')}); an executor runs on one host`,
        key,
        ['members'],
      ),
    );
  const o = backendOf(plan.options);
  const pinned = [...volumeHosts][0];
  if (pinned !== undefined && o.host !== undefined && o.host !== pinned)
    return E.left(
      invalidEntry(`${key} is pinned to host ${o.host} but its volumes live on ${pinned}`, key, ['options.backend.host']),
    );
  const image = plan.after.find((m) => m.id.kind === 'image');
  const imageEl = image === undefined ? undefined : plan.elements.get(image.id.key);
  const imageId = imageEl === undefined || imageIdOf(imageEl) === '' ? undefined : imageIdOf(imageEl);
  const host = pinned ?? o.host;
  const owner = ownerOfRun(plan);
  return pool.place(key, {
    memoryBytes: plan.options.memoryBytes ?? DEFAULTS.memoryBytes,
    ...(owner === undefined ? {} : { owner }),
    ...(o.constraints === undefined ? {} : { constraints: o.constraints }),
    ...(host === undefined ? {} : { host }),
    ...(typeof imageId === 'string' ? { imageId } : {}),
  });
};

/**
 * Who an executor's run belongs to, for the owner rule of placement: the ro `owner` its task
 * members carry, when every one carries the same; otherwise nobody (it runs on shared hosts only).
 */
const ownerOfRun = (plan: CommitPlan): string | undefined => {
  const owners = new Set<string | undefined>();
  for (const m of plan.after)
    if (m.id.kind === 'task') {
      const ro = plan.elements.get(m.id.key)?.ro;
      owners.add(ro === undefined ? undefined : fromUtf8(ro).owner);
    }
  return owners.size === 1 ? [...owners][0] : undefined;
};

/** A run's sink that also frees the executor's slot on its host when the container stops. */
const trackedSink = (sink: RunSink, host: Host): RunSink =>
  sinkOver(sink, {
    end: (outcome) => {
      if (outcome.executor?.state === 'stopped') host.track(sink.executor, undefined);
      return sink.end(outcome);
    },
  });

/** A run in progress: its sink and what its driver said about the process. */
interface LiveRun {
  readonly sink: RunSink;
  process?: Readonly<Record<string, unknown>>;
}

/**
 * The runs in progress on each host, so that a host that stops answering ends its runs `lost`
 * (naming the host) instead of leaving them running for good: their slots free and their
 * waiters answer. A main container left behind is removed by the host's janitor once the host
 * answers again (an exec's container is its executor's, which its own main run ends).
 */
export class LiveRuns {
  private readonly byHost = new Map<Host, Set<LiveRun>>();

  /** Watches a run on `host` from its start to its end. */
  open(sink: RunSink, host: Host): RunSink {
    let runs = this.byHost.get(host);
    if (runs === undefined) this.byHost.set(host, (runs = new Set()));
    const set = runs;
    const run: LiveRun = { sink };
    return {
      ...sink,
      get kept() {
        return sink.kept;
      },
      get stopping() {
        return sink.stopping;
      },
      output: (stream, data) => sink.output(stream, data),
      started: (r) => {
        run.process = r.process;
        set.add(run);
        sink.started(r);
      },
      end: (outcome) => {
        set.delete(run);
        return sink.end(outcome);
      },
    };
  }

  /** How many runs are in progress on `host`. */
  count(host: Host): number {
    return this.byHost.get(host)?.size ?? 0;
  }

  /** Ends every run in progress on `host` as `lost`, naming the host and why. */
  async lose(host: Host, why: string): Promise<void> {
    const runs = [...(this.byHost.get(host) ?? [])];
    this.byHost.get(host)?.clear();
    const lost = { host: host.name, lost: `host ${host.name} stopped answering: ${why}` };
    for (const run of runs) {
      const p = run.process ?? {};
      const main = typeof p.containerId === 'string' && typeof p.execId !== 'string';
      if (main) {
        host.expected.add(String(p.containerId));
        host.janitor.add({ kind: 'container', ref: String(p.containerId) });
      }
      await run.sink
        .end({
          exitCode: null,
          reason: 'lost',
          process: lost,
          ...(main ? { executor: { state: 'stopped', containerId: null, mainTask: null } } : {}),
        })
        .catch(() => undefined);
    }
  }
}

/** The memory an executor reserves on its host. */
const memoryOf = (options: ExecutorOptions): number => options.memoryBytes ?? DEFAULTS.memoryBytes;

/** When a commit starts a container, its image follows it to its host (copied there if missing). */
const imageFollows = async (pool: HostPool, host: Host, plan: CommitPlan): Promise<E.Either<AnyError, void>> => {
  if (!startsContainer(plan)) return E.right(undefined);
  const image = plan.after.find((m) => m.id.kind === 'image');
  const el = image === undefined ? undefined : plan.elements.get(image.id.key);
  return el === undefined ? E.right(undefined) : ensureImage(pool, host, el);
};

/**
 * A commit on the executor's host (`hostFor`): the placement is load at once (a burst spreads)
 * and the reservation goes when the commit fails; its runs are tracked per host.
 */
const routedCommit =
  (pool: HostPool, of: (h: Host) => ExecutorDriver, live: LiveRuns) =>
  async (plan: CommitPlan): Promise<DriverCommit> => {
    const failAll = (error: AnyError): DriverCommit => E.left({ error, results: [] });
    const h = hostFor(pool, plan);
    if (E.isLeft(h)) return failAll(h.left);
    const host = h.right;
    const placed = startsContainer(plan) && containerIdOf(plan) === undefined;
    const release = (): void => {
      if (placed) host.track(plan.executor.key, undefined);
    };
    if (placed) host.track(plan.executor.key, memoryOf(plan.options));
    const img = await imageFollows(pool, host, plan);
    if (E.isLeft(img)) {
      release();
      return failAll(img.left);
    }
    const runs = plan.runs;
    const routed: CommitPlan = {
      ...plan,
      runs: { open: (task) => live.open(trackedSink(runs.open(task), host), host), stop: runs.stop },
    };
    const r = await of(host)
      .commit(routed)
      .catch((err: unknown) => {
        release();
        throw err;
      });
    if (E.isLeft(r)) {
      release();
      return r;
    }
    const running = r.right.attributes.state === 'running';
    host.track(plan.executor.key, running ? memoryOf(plan.options) : undefined);
    return E.right({
      ...r.right,
      attributes: { ...r.right.attributes, host: host.name, memoryBytes: memoryOf(plan.options) },
    });
  };

/** Executors over many hosts (see the module comment). */
export const routedExecutorDriver = (
  pool: HostPool,
  faults?: FaultHook,
  live = new LiveRuns(),
  agentOn = true,
  directPorts = true,
): ExecutorDriver => {
  const of = perHost((e) => executorDriver(e, faults, agentOn, directPorts));
  const commit = routedCommit(pool, of, live);

  return {
    backendOptions: DockerExecutorOptionsC,
    commit,
    undo: async (plan, attributes) => {
      const host = pool.of({ attributes });
      host.track(plan.executor.key, undefined);
      await of(host).undo(plan, attributes);
    },
    async destroy(el, comp): Promise<E.Either<DeleteError, void>> {
      const host = pool.of(el);
      host.track(el.id.key, undefined);
      return of(host).destroy(el, comp);
    },
    async recover(intent) {
      for (const h of pool.all()) if (h.state === 'active') await of(h).recover?.(intent);
    },
    async resume(sink, status, executor) {
      const host = pool.of(executor);
      if (executor.attributes.state === 'running') {
        const mem = executor.attributes.memoryBytes;
        host.track(executor.id.key, typeof mem === 'number' ? mem : DEFAULTS.memoryBytes);
      }
      await of(host).resume?.(live.open(trackedSink(sink, host), host), status, executor);
    },
    async close() {
      for (const h of pool.all()) await of(h).close?.();
    },
  };
};
