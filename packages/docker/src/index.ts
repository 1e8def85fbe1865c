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
  decodeExecutorOptions,
  decodeOptions,
  decodeTaskSpec,
  fnC,
  invalidEntry,
  notFound,
  toId,
  type AnyError,
  instanceC,
  runtimeError,
  unavailable,
  type Authorizer,
  type CredentialResolver,
  type CallContext,
  type IdLike,
  type ReadError,
  type InvalidEntry,
  type RuntimeError,
  type StoreConfig,
  type Unavailable,
} from '@lessl/core';
import { assemble, commonOpenOptions, Registry, type Backend, type RegistryOptions } from '@lessl/level';
import { DEFAULT_CALL_TIMEOUT_MS, Engine, guardCalls } from './engine.js';
import { fromDocker } from './errors.js';
import { containerBase, DockerExecutorOptionsC, executorDriver, type FaultHook } from './executor.js';
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
import { imageDriver } from './images.js';
import { reconcile, sweeper, watch, type ReconcileReport } from './sync.js';
import { flushLastUse, purge as purgeImages, type PurgeOptions, type PurgeReport } from './freshness.js';
import { volumeDriver } from './volumes.js';
import { SwarmOptionsC, swarmExecutorDriver, type SwarmOptions } from './swarm.js';

export { busyboxRootfs, busyboxRootfsBytes, hasBusybox, BUSYBOX } from './base.js';
export { DEFAULTS, DockerExecutorOptionsC, type DockerExecutorOptions, type FaultHook } from './executor.js';
export { IDLE_CMD, POOL_MEMORY_CAP, PROFILE_DEFAULTS, type PoolProfileRequest, type PoolStats } from './pool.js';
export { ImageSourceC, type ImageSource } from './sources.js';
export { DEFAULT_CALL_TIMEOUT_MS } from './engine.js';
export { purge, type ReconcileReport } from './sync.js';
export { lastUsedOf, type PurgeOptions, type PurgeReport } from './freshness.js';
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
export interface DockerBackendOptions {
  /** A dockerode client; default: DOCKER_HOST, else the default socket. */
  readonly docker?: Docker;
  /** A socket path (e.g. a Podman Docker-compatible socket) when no client is given. */
  readonly socketPath?: string;
  /** A registry, or how to open one (default: in memory). */
  readonly registry?: Registry | RegistryOptions;
  readonly stores?: readonly StoreConfig[];
  readonly authorize?: Authorizer;
  /** Map Docker's event stream into lessl events (default true). */
  readonly watch?: boolean;
  /** Test hook: make a commit step fail (exercises rollback). */
  readonly faults?: FaultHook;
  /**
   * Milliseconds any call to the engine may take before it answers `Unavailable` naming the
   * engine (default 30,000). Streams (wait, events, output) are bounded until they start.
   */
  readonly callTimeoutMs?: number;
  /** Output kept per task run (default 1 MiB; a spec's `limits.outputBytes` wins). */
  readonly outputBytes?: number;
  /**
   * Resolves `spec.credentials` when a task starts: `env` goes into the container's (or exec's)
   * environment, `files` are written into the container before the process starts. Without
   * one, binding a task with credentials answers `Unsupported` (`spec.credentials`).
   */
  readonly credentials?: CredentialResolver;
  /**
   * Run executors as Swarm services on the engine (a Swarm manager) instead of containers:
   * `registry` (`host:port`) is where every node pulls images from (docs/swarm.md).
   */
  readonly swarm?: SwarmOptions;
}

/** io-ts codecs of `DockerBackendOptions` (exact: `openDockerBackend` refuses unknown keys). */
export const DockerBackendOptionsProps = {
  ...commonOpenOptions,
  docker: instanceC('Docker', Docker),
  socketPath: t.string,
  watch: t.boolean,
  faults: fnC<FaultHook>('FaultHook'),
  callTimeoutMs: t.refinement(t.number, (n) => Number.isInteger(n) && n > 0, 'PositiveInt'),
  swarm: SwarmOptionsC,
};

/** A Docker backend: the core contracts plus Docker specifics. */
export interface DockerBackend extends Backend {
  readonly docker: Docker;
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
  /** An image's content as a stream (a `docker save` archive, loadable with `source: { type: 'tarball' }`). */
  exportImage(id: IdLike, ctx?: CallContext): TaskEither<ReadError, NodeJS.ReadableStream>;
}

/**
 * Validates the options (unknown keys or wrong types: `InvalidEntry` naming them), connects
 * to the engine (answering `Unavailable` when it cannot be reached), opens the
 * registry, recovers interrupted creates, reconciles with Docker and starts watching its events.
 * @example
 * const lessl = await unwrap(openDockerBackend({ registry: { location: './lessl-data' } }));
 * await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: await busyboxRootfsBytes() }));
 * const r = await unwrap(lessl.run({ image: 'image://local/base', spec: { cmd: ['echo', 'hi'] } }));
 * await lessl.close();
 */
export const openDockerBackend =
  (options: DockerBackendOptions = {}): TaskEither<InvalidEntry | Unavailable | RuntimeError, DockerBackend> =>
  async () => {
    const decoded = decodeOptions(DockerBackendOptionsProps, options, 'Docker backend options');
    if (E.isLeft(decoded)) return decoded;
    const opts: DockerBackendOptions = decoded.right;
    const docker = opts.docker ?? (opts.socketPath === undefined ? new Docker() : new Docker({ socketPath: opts.socketPath }));
    guardCalls(docker, opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
    try {
      await docker.ping();
    } catch (err) {
      return E.left(
        unavailable(
          '',
          'no Docker engine answers (DOCKER_HOST or /var/run/docker.sock); start one, e.g. `dockerd --bridge=none --iptables=false --ip-forward=false &`',
          err,
        ),
      );
    }
    let registry: Registry;
    try {
      registry = opts.registry instanceof Registry ? opts.registry : await Registry.open(opts.registry ?? { memory: true });
    } catch (err) {
      return E.left(runtimeError('', 'could not open the registry', err));
    }
    const engine = new Engine(docker, registry.instanceId);
    const exec =
      opts.swarm === undefined ? executorDriver(engine, opts.faults) : swarmExecutorDriver(engine, opts.swarm, opts.faults);
    /** What runs in the background after open (the watcher, the late sweeps); stopped on close. */
    const background: { stop(): Promise<void> }[] = [];
    const b: E.Either<InvalidEntry | RuntimeError, Backend> = await assemble({
      registry,
      stores: opts.stores ?? DEFAULT_DOCKER_STORES,
      drivers: { image: imageDriver(engine), volume: volumeDriver(engine) },
      executor: exec,
      ...(opts.authorize === undefined ? {} : { authorize: opts.authorize }),
      ...(opts.outputBytes === undefined ? {} : { runtime: { outputBytes: opts.outputBytes } }),
      ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
      onClose: async () => {
        for (const b of background) await b.stop();
        await engine.settled();
        await engine.janitor.stop();
      },
    }).catch((err: unknown) => E.left(runtimeError('', 'could not recover interrupted creates', err)));
    if (E.isLeft(b)) {
      await registry.close();
      return b;
    }
    const reconciled = await reconcile(engine, registry, engine.recovered);
    const pool = new WarmPool(engine);
    engine.pool = pool;
    const lastUse = setInterval(() => void flushLastUse(engine, registry), 2000);
    lastUse.unref();
    background.push({
      stop: async () => {
        clearInterval(lastUse);
        await flushLastUse(engine, registry);
      },
    });
    background.unshift({ stop: () => pool.close() });
    const late = sweeper(engine, registry, reconciled);
    background.push(late);
    if (opts.watch !== false)
      background.unshift(
        watch(engine, registry, {
          reconnected: () => {
            void engine.janitor.kick();
            late.kick();
          },
          unowned: () => late.kick(),
        }),
      );
    const backend = b.right;
    return E.right({
      ...backend,
      docker,
      reconciled,
      purge: purgeImages(engine, registry, backend.stores.image),
      pool: {
        configure: (profiles, o) => async () => {
          const resolved: WarmProfile[] = [];
          for (const [i, p] of (Array.isArray(profiles) ? profiles : []).entries()) {
            const r = resolveProfile(registry, p, i);
            if (E.isLeft(r)) return r;
            resolved.push(r.right);
          }
          const cap = o?.memoryCapBytes ?? POOL_MEMORY_CAP;
          if (!Number.isSafeInteger(cap) || cap < 0)
            return E.left(invalidEntry('memoryCapBytes must be a non-negative integer', '', ['memoryCapBytes']));
          await pool.configure(resolved, cap);
          return E.right(pool.stats());
        },
        stats: () => pool.stats(),
      },
      exportImage: (id, ctx) => async () => {
        const el = await backend.stores.image.read(id, undefined, ctx)();
        if (E.isLeft(el)) return el;
        try {
          return E.right(await docker.getImage(String(el.right.attributes.imageId)).get());
        } catch (err) {
          return E.left(fromDocker(el.right.id.key, err) as ReadError);
        }
      },
    });
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
  const base = containerBase(String(el.attributes.imageId ?? ''), options.right, limits.right.limits ?? {});
  return E.right({ key: warmKey(base), image: id.right.key, base, min: p.min, max, idleMs, idleCmd: [...idleCmd] });
};
