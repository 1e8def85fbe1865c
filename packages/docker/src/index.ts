/**
 * @lessl/docker: the Docker backend. Images, volumes, executors (containers) and tasks (their
 * processes and execs) on a real Docker Engine, through the lessl contracts.
 *
 * @example
 * const lessl = await unwrap(openDockerBackend({ registry: { location: './.lessl' } }));
 * await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: busyboxRootfs() }));
 * @packageDocumentation
 */
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  decodeCallContext,
  decodeExecutorOptions,
  decodeOptions,
  decodeTaskSpec,
  fnC,
  hostKey,
  invalidEntry,
  nameCollision,
  notFound,
  taskStatusOf,
  toId,
  type AnyError,
  instanceC,
  runtimeError,
  unavailable,
  type Capabilities,
  type CallContext,
  type Element,
  type IdLike,
  type ReadError,
  type InvalidEntry,
  type RuntimeError,
  type StoreConfig,
  type Unavailable,
  type Unsupported,
  unsupported,
} from '@lessl/core';
import { DockerFunctions } from './functions.js';
import { commonOpenOptions, openRegistry, registryOpenFailure, Registry, type CommonOpenOptions } from '@lessl/level';
import { assemble, recordDoor, type Backend, type RecordDoor } from '@lessl/kit';
import { dockerSystem } from './client/system.js';
import { CallGuard, DEFAULT_CALL_TIMEOUT_MS, endpointOf } from './guard.js';
import { LOCAL_HOST, type Host } from './host.js';
import { fromDocker, isTlsError } from './errors.js';
import { containerBase, DockerExecutorOptionsC, type FaultHook } from './executor.js';
import {
  clientFor,
  hostEvent,
  HostPolicyC,
  HostPool,
  HostSpecC,
  type HostInfo,
  type HostPolicy,
  type HostSpec,
} from './hosts.js';
import { ensureImage, LiveRuns, routedExecutorDriver, routedImageDriver, routedVolumeDriver } from './routing.js';
import {
  IDLE_CMD,
  POOL_MEMORY_CAP,
  PROFILE_DEFAULTS,
  WarmPool,
  warmKey,
  type PoolProfileRequest,
  type PoolStats,
  type WarmProfile,
} from './pool.js';
import { reconcile, sweeper, watch, type ReconcileReport } from './sync.js';
import { flushLastUse, purge as purgeImages, type PurgeOptions, type PurgeReport } from './freshness.js';
import { freshness, type PreloadOptions, type PreloadRequest, type PreloadResult, type RefreshReport } from './refresh.js';
import { imageDriver } from './images.js';
import { imageIdOf } from './attributes.js';
import { EgressGuard } from './egress.js';
import { SwarmOptionsC, swarmExecutorDriver, withSwarmCopies, type SwarmOptions } from './swarm.js';
import { agentBinary } from './agent/binary.js';
import { discoverEngine } from './discovery.js';
import { startReaper, startReaperInBackground, type Reaper } from './reaper.js';

export { busyboxRootfs, busyboxRootfsBytes, hasBusybox, BUSYBOX } from './base.js';
export { DEFAULTS, DockerExecutorOptionsC, type DockerExecutorOptions, type FaultHook } from './executor.js';
export { IDLE_CMD, POOL_MEMORY_CAP, PROFILE_DEFAULTS, type PoolProfileRequest, type PoolStats } from './pool.js';
export { ImageSourceC, type ImageSource } from './sources.js';
export { EgressGuard, EgressRefused, egressRefusal, guardedFetch } from './egress.js';
export { DEFAULT_CALL_TIMEOUT_MS } from './guard.js';
export { LOCAL_HOST } from './host.js';
export {
  AgentContainer,
  startAgentContainer,
  type AgentContainerSpec,
  type AgentRun,
  type AgentRunEnd,
  type AgentRunRequest,
} from './agent/container.js';
export { Forwarder, CONN_WINDOW, type ConnectError as ForwardConnectError } from './agent/forward.js';
export type { Frame as AgentFrame } from './agent/frames.js';
export { agentBinary };
export { REAPER_GRACE_MS, REAPER_IMAGE, REAPER_SCRIPT, type Reaper } from './reaper.js';
export {
  contextDir,
  DEFAULT_SOCKET,
  describeAttempts,
  discoverEngine,
  type DiscoveredEngine,
  type DiscoveryInput,
  type EngineAttempt,
  type EngineEndpoint,
  type EngineSource,
  type EngineTls,
} from './discovery.js';
export { HostPolicyC, HostSpecC, type HostInfo, type HostPolicy, type HostSpec } from './hosts.js';
export {
  IMAGE_MISSING_PENALTY,
  loadOf,
  OWN_HOST_BONUS,
  OWNER_LABEL,
  ownerOfHost,
  place,
  refusal,
  type HostState,
  type Placement,
  type PlacementHost,
  type PlacementRequest,
} from './placement.js';
export { purge, type ReconcileReport } from './sync.js';
export { lastUsedOf, type PurgeOptions, type PurgeReport } from './freshness.js';
export { SINGLE_HOST, type PreloadOptions, type PreloadRequest, type PreloadResult, type RefreshReport } from './refresh.js';
export { checkedTar, refuseEntry, type TarEntryHeader, type TarPolicy } from './tar.js';
export { fromDocker };
export type { On409 } from './errors.js';
export { imageRef, volumeName, roLabelValue, LABEL } from './names.js';
export {
  SwarmExecutorOptionsC,
  SwarmOptionsC,
  SWARM_START_TIMEOUT_MS,
  type SwarmExecutorOptions,
  type SwarmOptions,
} from './swarm.js';

/** The stores a Docker backend has unless told otherwise. */
export const DEFAULT_DOCKER_STORES: readonly StoreConfig[] = [
  { kind: 'image', name: 'local' },
  { kind: 'volume', name: 'local' },
  { kind: 'volume', name: 'tmp', options: { tmpfs: true } },
  { kind: 'task', name: 'local' },
  { kind: 'executor', name: 'local' },
];

/** Options of `openDockerBackend`. */
export interface DockerBackendOptions extends CommonOpenOptions {
  /**
   * A dockerode client; default: the engine found as the `docker` CLI finds it (DOCKER_HOST,
   * DOCKER_CONTEXT, the current context, the rootless socket, /var/run/docker.sock: `discoverEngine`).
   */
  readonly docker?: Docker;
  /**
   * Several engines (docs/hosts.md): each a host with a name, where its engine answers, labels
   * and capacity. Executors are placed among the active ones. Not with `docker`/`socketPath`.
   */
  readonly hosts?: readonly HostSpec[];
  /** How hosts are watched: failures before `inactive`, housekeeping interval, probe backoff. */
  readonly hostPolicy?: HostPolicy;
  /** A socket path (e.g. a Podman Docker-compatible socket) when no client is given. */
  readonly socketPath?: string;
  /** Map Docker's event stream into lessl events (default true). */
  readonly watch?: boolean;
  /** Test hook: make a commit step fail (exercises rollback). */
  readonly faults?: FaultHook;
  /**
   * Milliseconds any call to the engine may take before it answers `Unavailable` naming the
   * engine (default 30,000). Streams (wait, events, output) are bounded until they start.
   */
  readonly callTimeoutMs?: number;
  /**
   * Run executors as Swarm services on the engine (a Swarm manager) instead of containers:
   * `registry` (`host:port`) is where every node pulls images from (docs/swarm.md).
   */
  readonly swarm?: SwarmOptions;
  /**
   * Guard the URL and http(s) git image sources against server-side request forgery: a host
   * resolving to a loopback, private, link-local, shared or unspecified address is refused
   * (`InvalidEntry` naming the address and range), checked at every redirect and pinned to the
   * checked address; `allowNetworks` (CIDRs) are let through. Default: no guard (the caller is
   * trusted); the task service sets one (docs/service.md).
   */
  readonly egress?: { readonly allowNetworks?: readonly string[] };
  /**
   * Run warm one-shot tasks through the in-container agent (default true, when the package was
   * built with it: `supports.warmAgent` says so); false: warm containers idle in `idleCmd` and
   * tasks run in them with the engine's exec (docs/pool.md).
   */
  readonly agent?: boolean;
  /**
   * Reach a task's ports (`tasks.connect`) from this machine when it can: a forwarder here enters
   * the container's network namespace, so connections do not go through the engine (about twice
   * as fast). Default true; it needs root on Linux and an engine on this machine, else (and with
   * false) connections go through the engine (docs/docker.md#task-ports).
   */
  readonly directPorts?: boolean;
  /**
   * Start a reaper (docs/docker.md#the-reaper): a small container that removes this session's
   * objects (containers, volumes, services, images labelled with the registry instance) when this
   * process dies without `close()`. Default: on for a throwaway registry (in memory, no location),
   * off otherwise (the next open reconciles those). On the first host, reached over its unix socket.
   */
  readonly reaper?: boolean;
}

/** io-ts codecs of `DockerBackendOptions` (exact: `openDockerBackend` refuses unknown keys). */
export const DockerBackendOptionsProps = {
  ...commonOpenOptions,
  docker: instanceC('Docker', Docker),
  hosts: t.array(HostSpecC),
  hostPolicy: HostPolicyC,
  socketPath: t.string,
  watch: t.boolean,
  faults: fnC<FaultHook>('FaultHook'),
  callTimeoutMs: t.refinement(t.number, (n) => Number.isInteger(n) && n > 0, 'PositiveInt'),
  swarm: SwarmOptionsC,
  egress: t.exact(t.partial({ allowNetworks: t.array(t.string) })),
  agent: t.boolean,
  directPorts: t.boolean,
  reaper: t.boolean,
};

/** A Docker backend: the core contracts plus Docker specifics. */
export interface DockerBackend extends Backend {
  /** The first host's dockerode client. */
  readonly docker: Docker;
  /** The hosts (docs/hosts.md): their states, load and errors; add and drain them. */
  readonly hosts: {
    /** Every host with its state, labels, capacity, load and last error. */
    list(): HostInfo[];
    /** Adds a host: `spawned` until its engine answers a health check, then `active`. */
    add(spec: HostSpec): TaskEither<AnyError, HostInfo>;
    /**
     * Drains a host: no new work goes there, running tasks may finish until `deadlineMs`
     * (default 60,000) and are then stopped; the host ends `removed`.
     */
    drain(name: string, opts?: { deadlineMs?: number }): TaskEither<AnyError, HostInfo>;
    /** Runs one housekeeping tick now (health checks, probes of inactive hosts) and answers the hosts. */
    check(): TaskEither<AnyError, HostInfo[]>;
  };
  /** What reconciliation on open found and did. */
  readonly reconciled: ReconcileReport;
  /** The warm pool (docs/pool.md): containers started ahead of need for one-shot tasks. */
  readonly pool: {
    /**
     * Replaces the pool's profiles and fills them (resolves once the ready containers run).
     * Profiles are checked (InvalidEntry, NotFound for an unknown image); `memoryCapBytes` bounds
     * the memory limits of all pool containers together (default 4 GiB).
     */
    configure(profiles: readonly PoolProfileRequest[], opts?: { memoryCapBytes?: number }): TaskEither<AnyError, PoolStats>;
    /** Hits, misses and sizes, per profile. */
    stats(): PoolStats;
  };
  /**
   * Removes least recently used images that nothing uses (docs/pool.md): those not used for
   * `unusedForMs`, then the oldest until at most `keepBytes` remain. Each image records when it
   * last served a task in `attributes.lastUsed`.
   */
  purge(opts?: PurgeOptions, ctx?: CallContext): TaskEither<AnyError, PurgeReport>;
  /**
   * Fetches an image element's source again (docs/pool.md): new content moves the element to it
   * atomically (a `modified` event) while running tasks keep the old; unchanged content answers
   * `changed: false`. An image without a source to fetch again is `Unsupported`.
   */
  refresh(id: IdLike, ctx?: CallContext): TaskEither<AnyError, RefreshReport>;
  /**
   * Makes images present ahead of need: creates missing elements from their `source`, fetches
   * again those whose Docker image is gone; answers what it did per image (and host).
   */
  preload(images: readonly PreloadRequest[], opts?: PreloadOptions, ctx?: CallContext): TaskEither<AnyError, PreloadResult[]>;
  /** An image's content as a stream (a `docker save` archive, loadable with `source: { type: 'tarball' }`). */
  exportImage(id: IdLike, ctx?: CallContext): TaskEither<ReadError, NodeJS.ReadableStream>;
}

/**
 * Validates the options (unknown keys or wrong types: `InvalidEntry` naming them), connects
 * to the engine or engines (answering `Unavailable` when none can be reached), opens the
 * registry, recovers interrupted creates, reconciles with Docker and starts watching its events.
 * @example
 * const lessl = await unwrap(openDockerBackend({ registry: { location: './lessl-data' } }));
 * await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: await busyboxRootfsBytes() }));
 * const r = await unwrap(lessl.run({ image: 'image://local/base', spec: { cmd: ['echo', 'hi'] } }));
 * await lessl.close();
 */
export const openDockerBackend =
  (options: DockerBackendOptions = {}): TaskEither<InvalidEntry | Unavailable | Unsupported | RuntimeError, DockerBackend> =>
  async () => {
    const decoded = decodeOptions(DockerBackendOptionsProps, options, 'Docker backend options');
    if (E.isLeft(decoded)) return decoded;
    const opts: DockerBackendOptions = decoded.right;
    const guard = opts.egress === undefined ? E.right(undefined) : EgressGuard.of(opts.egress.allowNetworks);
    if (E.isLeft(guard)) return E.left(invalidEntry(`egress.allowNetworks: ${guard.left}`, '', ['egress.allowNetworks']));
    const engines = await connect(opts);
    if (E.isLeft(engines)) return engines;
    const registry = await registryOf(opts);
    if (E.isLeft(registry)) return registry;
    const hosts = hostPoolOf(registry.right, opts, engines.right);
    const reaper = await reaperOf(opts, registry.right, hosts);
    if (E.isLeft(reaper)) {
      await hosts.close();
      if (!(opts.registry instanceof Registry)) await registry.right.close();
      return reaper;
    }
    const live = new LiveRuns();
    const parts: Parts = {
      opts,
      registry: registry.right,
      hosts,
      background: [],
      live,
      egress: guard.right,
      reaper: reaper.right,
    };
    const b = await assembleOn(parts);
    if (E.isLeft(b)) {
      await reaper.right?.stop();
      await hosts.close();
      if (!(opts.registry instanceof Registry)) await registry.right.close();
      return b;
    }
    return E.right(await start(parts, b.right));
  };

/** A host's engine as open found it: its client, its call guard, whether it answered a ping. */
interface FoundEngine {
  readonly spec: HostSpec;
  readonly docker: Docker;
  readonly guard: CallGuard;
  readonly answered: boolean;
}

/** What the phases of `openDockerBackend` share. */
interface Parts {
  readonly opts: DockerBackendOptions;
  readonly registry: Registry;
  readonly hosts: HostPool;
  /** What runs in the background after open (the watchers, the late sweeps); stopped on close. */
  readonly background: { stop(): Promise<void> }[];
  /** Runs in progress per host (a host that stops answering ends its runs `lost`). */
  readonly live: LiveRuns;
  readonly egress: EgressGuard | undefined;
  /** The reaper of this session, when one runs (stood down last on close). */
  readonly reaper: Reaper | undefined;
}

/**
 * Open, phase 1: a client per host, each pinged through its call guard (bounded from the first
 * call: a hung engine answers Unavailable). Every host answering is active; the others stay
 * spawned until they answer. None answering is `Unavailable`.
 */
const connect = async (opts: DockerBackendOptions): Promise<E.Either<InvalidEntry | Unavailable, FoundEngine[]>> => {
  const specs = hostSpecsOf(opts);
  if (E.isLeft(specs)) return specs;
  const ms = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  if (opts.hosts === undefined && opts.docker === undefined && opts.socketPath === undefined) return discovered(ms);
  const found: Omit<FoundEngine, 'answered'>[] = [];
  for (const spec of specs.right) {
    const c = spec.url === undefined && opts.docker !== undefined ? E.right(opts.docker) : clientFor(spec);
    if (E.isLeft(c)) return c;
    found.push({ spec, docker: c.right, guard: new CallGuard(ms, `${spec.name} (${endpointOf(c.right)})`) });
  }
  const engines = await Promise.all(
    found.map(async (f) => ({
      ...f,
      answered: await dockerSystem(f.docker, f.guard.run)
        .ping()
        .then(
          () => true,
          () => false,
        ),
    })),
  );
  if (engines.some((e) => e.answered)) return E.right(engines);
  const where = engines.map((p) => `${p.spec.name} (${endpointOf(p.docker)})`).join(', ');
  return E.left(
    unavailable(
      '',
      `no Docker engine answers ${where}; start one, e.g. \`dockerd --bridge=none --iptables=false --ip-forward=false &\``,
    ),
  );
};

/** Open, phase 1 with no engine options: the engine found as the `docker` CLI finds it (discovery.ts). */
const discovered = async (ms: number): Promise<E.Either<InvalidEntry | Unavailable, FoundEngine[]>> => {
  const found = await discoverEngine({ timeoutMs: ms })();
  if (E.isLeft(found)) return found;
  const { docker, url } = found.right;
  return E.right([
    {
      spec: { name: LOCAL_HOST, url },
      docker,
      guard: new CallGuard(ms, `${LOCAL_HOST} (${endpointOf(docker)})`),
      answered: true,
    },
  ]);
};

/** Whether the registry is thrown away with the process (in memory, not given): its objects are the session's. */
const throwaway = (opts: DockerBackendOptions): boolean =>
  opts.registry === undefined ||
  (!(opts.registry instanceof Registry) && !('location' in opts.registry) && !('db' in opts.registry));

/**
 * Open, phase 3b: the reaper (on by default for a throwaway registry), on the first host when its
 * engine is reached over its unix socket (its socket is mounted into the reaper). Asked for
 * (`reaper: true`) and impossible: `Unsupported` or `Unavailable`; by default: a warning, no reaper.
 */
const reaperOf = async (
  opts: DockerBackendOptions,
  registry: Registry,
  hosts: HostPool,
): Promise<E.Either<Unavailable | Unsupported, Reaper | undefined>> => {
  if (!(opts.reaper ?? throwaway(opts))) return E.right(undefined);
  const primary = hosts.primary;
  const endpoint = hosts.info(primary).endpoint;
  const refuse = (e: Unavailable | Unsupported): E.Either<Unavailable | Unsupported, undefined> => {
    if (opts.reaper === true) return E.left(e);
    primary.logger.warn({ host: primary.name, why: e.message }, 'no reaper for this session');
    return E.right(undefined);
  };
  if (!endpoint.startsWith('unix://'))
    return refuse(unsupported('', 'reaper', `it mounts the engine's unix socket; ${primary.name} is reached at ${endpoint}`));
  if (primary.state !== 'active') return refuse(unavailable(hostKey(primary.name), `${primary.name} does not answer: no reaper`));
  const socket = endpoint.slice('unix://'.length);
  // asked for: open answers once it runs (or why it cannot); by default it starts beside open
  if (opts.reaper !== true) return E.right(startReaperInBackground(primary, registry.instanceId, socket, refuse));
  const r = await startReaper(primary, registry.instanceId, socket);
  return E.isLeft(r) ? refuse(r.left) : r;
};

/** Open, phase 2: the registry given, or opened as the options say. */
const registryOf = async (opts: DockerBackendOptions): Promise<E.Either<RuntimeError, Registry>> => {
  if (opts.registry instanceof Registry) return E.right(opts.registry);
  try {
    return E.right(await openRegistry(opts.registry, opts.durability));
  } catch (err) {
    return E.left(runtimeError('', registryOpenFailure(opts.registry, err), err));
  }
};

/** Open, phase 3: the host pool, each host with its guard; those that answered are active. */
const hostPoolOf = (registry: Registry, opts: DockerBackendOptions, engines: readonly FoundEngine[]): HostPool => {
  const hosts = new HostPool(registry.instanceId, opts.hostPolicy, opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS, opts.logger);
  for (const { spec, docker, guard, answered } of engines) {
    const h = hosts.add(docker, spec, endpointOf(docker), guard);
    if (answered) hosts.markActive(h);
  }
  return hosts;
};

/** What the Docker backend supports (the capability manifest). */
const capabilitiesOf = (opts: DockerBackendOptions): Partial<Capabilities> => ({
  parents: true,
  data: true,
  reopen: true,
  tasks: true,
  daemons: true,
  // Swarm has no exec into a task (it may run on another node)
  execIntoRunning: opts.swarm === undefined,
  restartPolicies: true,
  hosts: true,
  swarm: opts.swarm !== undefined,
  pool: true,
  warmAgent: opts.swarm === undefined && opts.agent !== false && agentBinary() !== undefined,
  imageSources: true,
  credentials: opts.credentials !== undefined,
  // reached through the in-container agent; a Swarm task may run on another node
  ports: opts.swarm === undefined && opts.agent !== false && agentBinary() !== undefined,
});

/** Open, phase 4: the drivers on the hosts, assembled (recovers interrupted creates and deletes). */
const assembleOn = ({
  opts,
  registry,
  hosts,
  background,
  live,
  egress,
  reaper,
}: Parts): Promise<E.Either<InvalidEntry | RuntimeError, Backend>> => {
  const images = routedImageDriver(hosts, egress);
  return assemble({
    registry,
    stores: opts.stores ?? DEFAULT_DOCKER_STORES,
    drivers: {
      image:
        opts.swarm === undefined
          ? images
          : withSwarmCopies(images, hosts.primary, opts.swarm, (el) => sameContent(registry, el), opts.logger),
      volume: routedVolumeDriver(hosts),
    },
    executor:
      opts.swarm === undefined
        ? routedExecutorDriver(hosts, opts.faults, live, opts.agent !== false, opts.directPorts !== false)
        : swarmExecutorDriver(hosts.primary, opts.swarm, opts.faults),
    supports: capabilitiesOf(opts),
    functions: new DockerFunctions(hosts.primary, registry),
    ...(opts.authorize === undefined ? {} : { authorize: opts.authorize }),
    ...(opts.authorizeFunction === undefined ? {} : { authorizeFunction: opts.authorizeFunction }),
    ...(opts.outputBytes === undefined ? {} : { runtime: { outputBytes: opts.outputBytes } }),
    ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    onClose: async () => {
      await hosts.close();
      for (const b of background) await b.stop();
      for (const h of hosts.all()) {
        await h.settled();
        await h.janitor.stop();
      }
      await reaper?.stop();
    },
  }).catch((err: unknown) => E.left(runtimeError('', 'could not recover interrupted creates', err)));
};

/**
 * Open, phase 5: reconciles every active host and watches it (and each host that becomes
 * reachable later), starts the warm pool, the last-use flush and housekeeping, and answers the
 * backend with the Docker calls.
 */
const start = async (parts: Parts, backend: Backend): Promise<DockerBackend> => {
  const { hosts, background, registry } = parts;
  const reconciled: ReconcileReport = { recovered: [], vanished: [], orphansRemoved: [] };
  for (const h of hosts.all()) reconciled.recovered.push(...h.recovered);
  const door = recordDoor(registry);
  const { adopt, sweepers } = adoption(parts, door, reconciled);
  for (const h of hosts.all()) if (h.state === 'active') await adopt(h);
  const warm = new WarmPool(hosts.primary, parts.opts.agent !== false);
  hosts.primary.pool = warm;
  background.push(lastUseFlusher(hosts, registry));
  background.unshift({ stop: () => warm.close() });
  hosts.hooks = {
    activated: adopt,
    changed: (h, from, reason) => {
      void door.announce(hostEvent(hosts.info(h), from, reason)).catch(() => undefined);
      // its runs can no longer be followed: they end lost (one engine: its runs wait for it, as it is the only one)
      if (h.state === 'inactive' && hosts.all().length > 1) void parts.live.lose(h, reason);
    },
    stopTasks: (h) => stopTasksOn(registry, backend, h),
    sweep: (h) => sweepers.get(h)?.kick(),
  };
  hosts.start();
  return {
    ...backend,
    docker: hosts.primary.docker,
    reconciled,
    hosts: hostsApi(hosts),
    ...imageCalls(parts, backend),
    pool: poolApi(registry, warm),
  };
};

/** Reconciles a host that became reachable and starts watching it (its late sweeps kept per host). */
const adoption = (
  { opts, hosts, background }: Parts,
  door: RecordDoor,
  reconciled: ReconcileReport,
): { adopt: (h: Host) => Promise<void>; sweepers: Map<Host, { kick(): void }> } => {
  const sweepers = new Map<Host, { kick(): void }>();
  const adopt = async (h: Host): Promise<void> => {
    await hosts.readResources(h);
    const owns = (el: Element): boolean => hosts.of(el) === h;
    await reconcile(h, door, [], reconciled, owns);
    const late = sweeper(h, door, reconciled);
    sweepers.set(h, late);
    background.push(late);
    if (opts.watch === false) return;
    const hooks = {
      reconnected: () => {
        void h.janitor.kick();
        late.kick();
      },
      unowned: () => late.kick(),
    };
    background.unshift(watch(h, door, hooks, owns));
  };
  return { adopt, sweepers };
};

/** Writes each image's last use (every 2 s, and once more on close). */
const lastUseFlusher = (hosts: HostPool, registry: Registry): { stop(): Promise<void> } => {
  const timer = setInterval(() => {
    for (const h of hosts.all()) void flushLastUse(h, registry);
  }, 2000);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      for (const h of hosts.all()) await flushLastUse(h, registry);
    },
  };
};

/** `backend.hosts`: list, add, drain, check. */
const hostsApi = (hosts: HostPool): DockerBackend['hosts'] => ({
  list: () => hosts.all().map((h) => hosts.info(h)),
  add: (spec) => async () => {
    const d = decodeOptions({ host: HostSpecC }, { host: spec }, 'host');
    if (E.isLeft(d)) return d;
    const s = d.right.host;
    if (s === undefined) return E.left(invalidEntry('a host is required', '', ['host']));
    if (hosts.get(s.name) !== undefined) return E.left(nameCollision(hostKey(s.name)));
    const c = clientFor(s);
    if (E.isLeft(c)) return c;
    const h = hosts.add(c.right, s, endpointOf(c.right));
    await hosts.check(h);
    // a TLS failure is the host's, not a passing outage: the registration is refused
    if (h.state === 'spawned' && isTlsError(h.lastErrorCause)) {
      hosts.forget(h.name);
      return E.left(unavailable(hostKey(s.name), `host ${s.name} (${endpointOf(c.right)}): TLS failed: ${h.lastError ?? ''}`));
    }
    return E.right(hosts.info(h));
  },
  drain: (name, o) =>
    exactly(DrainOptionsProps, o, 'drain options', undefined, (d) => () => hosts.drain(name, d.deadlineMs ?? DEFAULT_DRAIN_MS)),
  check: () => async () => {
    await hosts.tick();
    return E.right(hosts.all().map((h) => hosts.info(h)));
  },
});

/** `backend.purge`, `refresh`, `preload` and `exportImage`. */
const imageCalls = (
  { opts, registry, hosts, egress }: Parts,
  backend: Backend,
): Pick<DockerBackend, 'purge' | 'refresh' | 'preload' | 'exportImage'> => {
  const primary = hosts.primary;
  const fresh = freshness(primary, registry, imageDriver(primary, egress), backend.stores.image, opts.authorize);
  return {
    purge: (o, ctx) =>
      exactly(PurgeOptionsProps, o, 'purge options', ctx, (d, c) => async () => {
        // what every host's tasks used counts, not only the first host's
        for (const h of hosts.all()) if (h !== primary) await flushLastUse(h, registry);
        return purgeImages(primary, registry, backend.stores.image)(d, c)();
      }),
    refresh: (id, ctx) => exactly({}, undefined, '', ctx, (_, c) => fresh.refresh(id, c)),
    preload: (requests, o, ctx) =>
      exactly(PreloadOptionsProps, o, 'preload options', ctx, (d, c) =>
        hosts.all().length === 1 ? fresh.preload(requests, d, c) : preloadOnHosts(hosts, registry, backend, requests, d, c),
      ),
    exportImage: (id, ctx) => async () => {
      const el = await backend.stores.image.read(id, undefined, ctx)();
      if (E.isLeft(el)) return el;
      try {
        return E.right(await hosts.of(el.right).clients.images.save(imageIdOf(el.right)));
      } catch (err) {
        return E.left(readErrorOf(el.right.id.key, err));
      }
    },
  };
};

const READ_ERRORS: ReadonlySet<AnyError['_tag']> = new Set<ReadError['_tag']>([
  'UnknownLocation',
  'InvalidEntry',
  'NotFound',
  'InvalidFilterSpec',
  'PermissionDenied',
  'RuntimeError',
  'Unavailable',
]);
const isReadError = (e: AnyError): e is ReadError => READ_ERRORS.has(e._tag);

/** A Docker failure of a read, as a read error (any other becomes a `RuntimeError` saying it). */
const readErrorOf = (id: string, err: unknown): ReadError => {
  const e = fromDocker(id, err);
  return isReadError(e) ? e : runtimeError(id, e.message, err);
};

/** `backend.pool`: configure and stats. */
const poolApi = (registry: Registry, warm: WarmPool): DockerBackend['pool'] => ({
  configure: (profiles, o) =>
    exactly(PoolOptionsProps, o, 'pool options', undefined, () => async () => {
      const resolved: WarmProfile[] = [];
      for (const [i, p] of (Array.isArray(profiles) ? profiles : []).entries()) {
        const r = resolveProfile(registry, p, i);
        if (E.isLeft(r)) return r;
        resolved.push(r.right);
      }
      const cap = o?.memoryCapBytes ?? POOL_MEMORY_CAP;
      if (!Number.isSafeInteger(cap) || cap < 0)
        return E.left(invalidEntry('memoryCapBytes must be a non-negative integer', '', ['memoryCapBytes']));
      await warm.configure(resolved, cap);
      return E.right(warm.stats());
    }),
  stats: () => warm.stats(),
});

const NonNegInt = t.refinement(t.number, (n) => Number.isSafeInteger(n) && n >= 0, 'NonNegativeInteger');
/** The options of the Docker backend's own calls, decoded exactly like every call's (`decodeOptions`). */
const DrainOptionsProps = { deadlineMs: NonNegInt };
const PurgeOptionsProps = { unusedForMs: NonNegInt, keepBytes: NonNegInt, dryRun: t.boolean };
const PreloadOptionsProps = { hosts: t.array(t.string) };
const PoolOptionsProps = { memoryCapBytes: NonNegInt };

/**
 * `call(options, ctx)` once the options object `o` decodes exactly with `props` and `ctx` as a
 * call context; else the InvalidEntry naming the unknown or mistyped key.
 */
const exactly = <P extends t.Props, A>(
  props: P,
  o: unknown,
  what: string,
  ctx: unknown,
  call: (options: t.TypeOf<t.PartialC<P>>, ctx: CallContext) => TaskEither<AnyError, A>,
): TaskEither<AnyError, A> => {
  const d = decodeOptions(props, o, what);
  if (E.isLeft(d)) return async () => d;
  const c = decodeCallContext('', ctx);
  if (E.isLeft(c)) return async () => c;
  return call(d.right, c.right);
};

/** How long `drain` waits for running tasks by default before stopping them. */
export const DEFAULT_DRAIN_MS = 60_000;

/** The hosts of the options: `hosts`, or one host named `local` (the `docker` client, `socketPath` or DOCKER_HOST). */
const hostSpecsOf = (opts: DockerBackendOptions): E.Either<InvalidEntry, readonly HostSpec[]> => {
  if (opts.hosts === undefined)
    return E.right([{ name: LOCAL_HOST, ...(opts.socketPath === undefined ? {} : { url: `unix://${opts.socketPath}` }) }]);
  if (opts.docker !== undefined || opts.socketPath !== undefined)
    return E.left(invalidEntry('give either hosts or docker/socketPath, not both', '', ['hosts']));
  if (opts.hosts.length === 0) return E.left(invalidEntry('hosts must name at least one host', '', ['hosts']));
  const names = new Set<string>();
  for (const h of opts.hosts) {
    if (names.has(h.name)) return E.left(invalidEntry(`two hosts are named ${h.name}`, '', ['hosts']));
    names.add(h.name);
  }
  return E.right(opts.hosts);
};

/** Whether another image element has the same content (Docker image ID) as `el`. */
const sameContent = (registry: Registry, el: Element): boolean =>
  registry.scan('image://', 1, (e) => e.id.key !== el.id.key && imageIdOf(e) === imageIdOf(el)).length > 0;

/** The hosts a preload copies to: those named, or every active one. */
const preloadTargets = (hosts: HostPool, o: PreloadOptions | undefined): E.Either<InvalidEntry, Host[]> => {
  const names: unknown =
    o?.hosts ??
    hosts
      .all()
      .filter((h) => h.state === 'active')
      .map((h) => h.name);
  if (!Array.isArray(names)) return E.left(invalidEntry('hosts must be a list of host names', '', ['hosts']));
  const targets: Host[] = [];
  for (const [i, n] of names.entries()) {
    const h = typeof n === 'string' ? hosts.get(n) : undefined;
    if (h === undefined) return E.left(invalidEntry(`no host ${String(n)}`, '', [`hosts[${i}]`]));
    targets.push(h);
  }
  return E.right(targets);
};

/** One preload request's image element: the one there is, or made from its `source` (`created`). */
const preloadElement = async (
  registry: Registry,
  backend: Backend,
  key: string,
  req: Exclude<PreloadRequest, string>,
  ctx: CallContext | undefined,
): Promise<E.Either<AnyError, { el: Element; created: boolean }>> => {
  const el = registry.get(key);
  if (el !== undefined) return E.right({ el, created: false });
  if (!('source' in req) || req.source === undefined) return E.left(notFound(key));
  const made = await backend.stores.image.create(
    { id: key, options: { source: req.source }, ...('ro' in req && req.ro !== undefined ? { ro: req.ro } : {}) },
    ctx,
  )();
  return E.isLeft(made) ? made : E.right({ el: made.right, created: true });
};

/**
 * `preload` over several hosts: each image element made from its source where missing (on the
 * host placement chooses), then copied to every named host (default: every active one).
 */
const preloadOnHosts =
  (
    hosts: HostPool,
    registry: Registry,
    backend: Backend,
    requests: readonly PreloadRequest[],
    o: PreloadOptions = {},
    ctx?: CallContext,
  ): TaskEither<AnyError, PreloadResult[]> =>
  async () => {
    if (!Array.isArray(requests)) return E.left(invalidEntry('preload takes a list of images', '', ['images']));
    const targets = preloadTargets(hosts, o);
    if (E.isLeft(targets)) return targets;
    const out: PreloadResult[] = [];
    for (const r of requests) {
      const req = typeof r === 'object' && r !== null && 'id' in r ? r : { id: r };
      const id = toId(req.id);
      if (E.isLeft(id)) return id;
      const key = id.right.key;
      const got = await preloadElement(registry, backend, key, req, ctx);
      if (E.isLeft(got)) {
        for (const h of targets.right) out.push({ id: key, host: h.name, done: 'failed', error: got.left });
        continue;
      }
      for (const h of targets.right) out.push(await copyTo(hosts, h, key, got.right));
    }
    return E.right(out);
  };

/** Makes a preloaded image present on one host: what it did there. */
const copyTo = async (
  hosts: HostPool,
  h: Host,
  key: string,
  { el, created }: { el: Element; created: boolean },
): Promise<PreloadResult> => {
  const imageId = imageIdOf(el);
  const home = hosts.of(el) === h;
  const had = h.images.has(imageId);
  const got = await ensureImage(hosts, h, el);
  if (E.isLeft(got)) return { id: key, host: h.name, done: 'failed', error: got.left };
  return { id: key, host: h.name, done: created && home ? 'created' : had || home ? 'present' : 'copied', imageId };
};

/** Stops every task still running on a host (a drain past its deadline). */
const stopTasksOn = async (registry: Registry, backend: Backend, h: Host): Promise<void> => {
  const running = new Set(h.executors());
  const tasks = registry.scan('task://', Number.MAX_SAFE_INTEGER, () => true);
  for (const t of tasks) {
    const st = taskStatusOf(t.attributes);
    if (st.state !== 'running' && st.state !== 'starting') continue;
    if (st.executor === null || !running.has(st.executor.key)) continue;
    await backend.tasks
      .kill(t.id.key, { signal: 'KILL' })()
      .catch(() => undefined);
  }
};

/** Checks a pool profile and resolves its image and container settings. */
const resolveProfile = (registry: Registry, p: PoolProfileRequest, i: number): E.Either<AnyError, WarmProfile> => {
  const at = `profiles[${i}]`;
  const bad = (why: string, key: string): E.Either<AnyError, never> =>
    E.left(invalidEntry(`${at}: ${why}`, '', [`${at}.${key}`]));
  if (typeof p !== 'object' || p === null) return bad('a profile must be an object', 'image');
  if (!Number.isSafeInteger(p.min) || p.min < 0 || p.min > PROFILE_DEFAULTS.maxMin)
    return bad(`min must be an integer 0-${PROFILE_DEFAULTS.maxMin}`, 'min');
  const max = p.max ?? p.min;
  if (!Number.isSafeInteger(max) || max < p.min) return bad('max must be an integer not below min', 'max');
  const idleMs = p.idleMs ?? PROFILE_DEFAULTS.idleMs;
  if (!Number.isSafeInteger(idleMs) || idleMs <= 0) return bad('idleMs must be a positive integer', 'idleMs');
  const idleCmd = p.idleCmd ?? IDLE_CMD;
  if (!Array.isArray(idleCmd) || idleCmd.length === 0 || !idleCmd.every((x) => typeof x === 'string'))
    return bad('idleCmd must be a non-empty list of strings', 'idleCmd');
  const id = toId(p.image);
  if (E.isLeft(id) || id.right.kind !== 'image') return bad('image must be an image ID', 'image');
  const el = registry.get(id.right.key);
  if (el === undefined) return E.left(notFound(id.right.key));
  const options = decodeExecutorOptions(id.right.key, p.options ?? {}, DockerExecutorOptionsC);
  if (E.isLeft(options)) return options;
  const limits = decodeTaskSpec(id.right.key, { cmd: ['true'], ...(p.limits === undefined ? {} : { limits: p.limits }) });
  if (E.isLeft(limits)) return limits;
  const base = containerBase(imageIdOf(el), options.right, limits.right.limits ?? {});
  return E.right({ key: warmKey(base), image: id.right.key, base, min: p.min, max, idleMs, idleCmd: [...idleCmd] });
};
