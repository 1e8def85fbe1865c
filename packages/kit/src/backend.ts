/**
 * Assembles a backend from the registry, store configs and drivers.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import {
  type FunctionAuthorizer,
  type Functions,
  allowAll,
  fnC,
  invalidEntry,
  isElementKind,
  showValue,
  type Authorizer,
  type CallContext,
  type Capabilities,
  type Composer,
  type CredentialResolver,
  type ElementKind,
  type ElementStore,
  type EventSource,
  type InvalidEntry,
  type RunFn,
  type StoreConfig,
  type TaskControl,
  taskStatusOf,
  taskSpecOf,
  kindOfKey,
  keyPrefix,
  LoggerC,
  safeLogger,
  type Logger,
} from '@lessl/core';
import { GenericComposer } from './composer.js';
import { specOnlyTaskDriver, type ElementDriver, type ExecutorDriver, type FunctionDriver } from './drivers.js';
import { FunctionRuntime } from './functions.js';
import type { RegistryPort } from './port.js';
import { makeRun, teardown } from './run.js';
import { TaskRuntime, type RuntimeOptions } from './runtime.js';
import { finishDelete, isDeleteIntent, KindStore } from './stores.js';
import { storeKey, type Wiring } from './wiring.js';
import { TaskLifecycle } from './tasks.js';

/** A running backend: one store per kind (routing by store name), the composer, the events. */
export interface Backend {
  readonly stores: Readonly<Record<ElementKind, ElementStore>>;
  readonly composer: Composer;
  readonly events: EventSource;
  /** The task lifecycle: status, wait, logs, kill. */
  readonly tasks: TaskControl;
  /** The one-call path: create a task, run it in a new executor, wait, clean up. */
  readonly run: RunFn;
  /** Named functions invoked with input (see `Functions`; docs/functions.md). */
  readonly functions: Functions;
  /** What this backend supports (see `Capabilities`). */
  readonly supports: Capabilities;
  /** The registry's ID: the backend labels its objects with it. */
  readonly instanceId: string;
  /**
   * Takes an executor apart: kills the tasks running in it, has every member leave, commits
   * (retrying a conflict), then deletes the executor. Never fails: what is left is reaped at the
   * next open. `run()` ends with it; the service tears its tasks down with it.
   */
  teardown(executor: string, ctx?: CallContext): Promise<void>;
  /**
   * Retention of the event log: removes the events older than `before` (never the newest) and
   * answers how many. Replays from a removed seq answer `InvalidEntry` naming `since`.
   */
  compactEvents(before: Date): Promise<number>;
  /**
   * Stops what the backend started in this process (watchers, timers, followers) and closes the
   * registry. Running tasks keep running; the next open finds them again.
   */
  close(): Promise<void>;
  /** `await using lessl = ...` closes the backend. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** What `assemble` takes. */
export interface AssembleOptions {
  readonly registry: RegistryPort;
  readonly stores: readonly StoreConfig[];
  readonly drivers: { readonly image: ElementDriver; readonly volume: ElementDriver; readonly task?: ElementDriver };
  readonly executor: ExecutorDriver;
  /** What the backend supports: the backend's own answer, over `defaultCapabilities`. */
  readonly supports?: Partial<Capabilities>;
  readonly authorize?: Authorizer;
  readonly onClose?: () => Promise<void>;
  /** Resolves task credentials (`spec.credentials`) when a task starts. */
  readonly credentials?: CredentialResolver;
  /** Task runtime options (output kept per run). */
  readonly runtime?: RuntimeOptions;
  /** Runs function invocations (without one, `functions.invoke` answers `Unsupported`). */
  readonly functions?: FunctionDriver;
  /** Who may do what with a function (default `functionOwnerRule`). */
  readonly authorizeFunction?: FunctionAuthorizer;
  /**
   * Where the backend reports what it does (open, recovery, task start and end, registry write
   * failures): a pino logger or anything with `debug/info/warn/error(obj, msg?)`. Default: nothing.
   */
  readonly logger?: Logger;
}

/** What the generic kit supports by itself; a backend answers the rest in `AssembleOptions.supports`. */
export const defaultCapabilities: Capabilities = {
  parents: true,
  data: true,
  reopen: true,
  tasks: true,
  execIntoRunning: false,
  daemons: true,
  restartPolicies: false,
  hosts: false,
  swarm: false,
  pool: false,
  warmAgent: false,
  imageSources: false,
  credentials: true,
  ports: false,
};

const PositiveInt = t.refinement(t.number, (n) => Number.isInteger(n) && n > 0, 'PositiveInt');

/** io-ts codec of a store configuration (exact; `options` are the backend's store options). */
export const StoreConfigC = t.intersection([
  t.type({ kind: t.keyof({ image: null, volume: null, task: null, executor: null }), name: t.string }),
  t.partial({
    policy: t.keyof({ 'read-write': null, 'read-only': null, 'create-only': null }),
    parents: t.boolean,
    options: t.UnknownRecord,
  }),
]);

/**
 * io-ts codecs of the open options every backend takes but the registry (`stores`, `authorize`,
 * `credentials`, `outputBytes`, `logger`, `durability`); `@lessl/level` adds `registry`
 * (`commonOpenOptions`), and a backend adds its own and decodes them with `decodeOptions`.
 */
export const kitOpenOptions = {
  stores: t.array(StoreConfigC),
  authorize: fnC<Authorizer>('Authorizer'),
  authorizeFunction: fnC<FunctionAuthorizer>('FunctionAuthorizer'),
  credentials: fnC<CredentialResolver>('CredentialResolver'),
  outputBytes: PositiveInt,
  logger: LoggerC,
  durability: t.keyof({ process: null, disk: null }),
};

/** Validates store configs: kinds, names, policies, no duplicates. */
export const validateStores = (stores: readonly StoreConfig[]): E.Either<InvalidEntry, ReadonlyMap<string, StoreConfig>> => {
  const map = new Map<string, StoreConfig>();
  for (const s of stores) {
    if (!isElementKind(s.kind)) return E.left(invalidEntry(`store ${s.name}: unknown kind ${showValue(s.kind)}`, '', ['stores']));
    if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(s.name))
      return E.left(invalidEntry(`invalid store name "${s.name}"`, '', ['stores']));
    if (s.policy !== undefined && !['read-write', 'read-only', 'create-only'].includes(s.policy))
      return E.left(invalidEntry(`store ${s.name}: unknown policy ${s.policy}`, '', ['stores']));
    if (map.has(storeKey(s))) return E.left(invalidEntry(`store ${storeKey(s)} is configured twice`, '', ['stores']));
    map.set(storeKey(s), s);
  }
  return E.right(map);
};

/**
 * Wires stores and composer over a registry, after recovering write intents an interrupted
 * create left (the driver removes any half-made object; the intent is dropped) and finishing the
 * deletes an interrupted delete left (see `finishDelete`).
 * @example
 * const registry = await Registry.open({ memory: true });
 * const backend = await assemble({ registry, stores: STORES, drivers: { image: myImageDriver }, executor: myExecutorDriver });
 */
export const assemble = async (o: AssembleOptions): Promise<E.Either<InvalidEntry, Backend>> => {
  const stores = validateStores(o.stores);
  if (E.isLeft(stores)) return stores;
  const drivers = { image: o.drivers.image, volume: o.drivers.volume, task: o.drivers.task ?? specOnlyTaskDriver };
  const log = safeLogger(o.logger);
  const recovered = await recoverIntents(o.registry, drivers, o.executor, log);
  const runtime = new TaskRuntime(o.registry, { ...o.runtime, ...(o.logger === undefined ? {} : { logger: o.logger }) });
  const w: Wiring = {
    registry: o.registry,
    stores: stores.right,
    authorize: o.authorize ?? allowAll,
    drivers,
    executor: o.executor,
    runtime,
    log,
    ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
  };
  const resumed = await resumeRuns(w);
  log.info({ lastSeq: o.registry.lastSeq(), recovered, ...resumed }, 'backend opened');
  const kinds = {
    image: new KindStore(w, 'image'),
    volume: new KindStore(w, 'volume'),
    task: new KindStore(w, 'task'),
    executor: new KindStore(w, 'executor'),
  };
  const composer = new GenericComposer(w);
  const tasks = new TaskLifecycle(w, runtime);
  const functions = new FunctionRuntime(w, {
    ...(o.functions === undefined ? {} : { driver: o.functions }),
    ...(o.authorizeFunction === undefined ? {} : { authorize: o.authorizeFunction }),
    ...(o.runtime?.outputBytes === undefined ? {} : { outputBytes: o.runtime.outputBytes }),
  });
  void functions.start();
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await functions.close();
      await o.onClose?.();
      await o.executor.close?.();
      await runtime.close();
      await o.registry.close();
    })());
  return E.right({
    stores: kinds,
    composer,
    events: o.registry.events,
    tasks,
    run: makeRun(w, kinds, composer, tasks),
    functions,
    supports: { ...defaultCapabilities, ...o.supports },
    instanceId: o.registry.instanceId,
    teardown: (executor, ctx) => teardown({ stores: kinds, composer, tasks }, executor, ctx),
    compactEvents: (before) => o.registry.compactEvents(before),
    close,
    [Symbol.asyncDispose]: close,
  });
};

/**
 * On open: finishes the deletes and undoes the creates an interrupted call left (their write
 * intents): the driver removes any half-made object, the intent goes. Answers how many.
 */
const recoverIntents = async (
  registry: RegistryPort,
  drivers: Wiring['drivers'],
  executor: ExecutorDriver,
  log: Logger,
): Promise<number> => {
  const intents = registry.pendingIntents();
  for (const intent of intents) {
    if (isDeleteIntent(intent)) {
      await finishDelete({ registry, drivers, executor, log }, intent);
      continue;
    }
    const kind = kindOfKey(intent.id);
    await (kind === 'executor' ? executor : kind === undefined ? undefined : drivers[kind])?.recover?.(intent);
    await registry.commit({ delIntent: [intent.id] });
    log.info({ id: intent.id }, 'recovered an interrupted create: its half-made object is removed');
  }
  return intents.length;
};

/**
 * Tasks the registry says are running (the process that ran them stopped): each gets a run again
 * and the executor driver follows it or ends it; without a driver that can, it is lost.
 */
const resumeRuns = async (w: Wiring): Promise<{ resumed: number; lost: number }> => {
  let resumed = 0;
  let lost = 0;
  for (const el of w.registry.scan(keyPrefix('task'))) {
    const st = taskStatusOf(el.attributes);
    if (st.state !== 'running' && st.state !== 'starting') continue;
    const run = await w.runtime.resume(el.id.key, st, taskSpecOf(el.attributes) ?? { cmd: ['true'] });
    const x = st.executor === null ? undefined : w.registry.get(st.executor.key);
    if (w.executor.resume === undefined || x === undefined) {
      lost++;
      w.log.warn({ task: el.id.key, run: st.run }, 'a task running when lessl stopped cannot be followed: lost');
      await run.end({ exitCode: null, reason: 'lost' });
    } else {
      resumed++;
      w.log.info({ task: el.id.key, executor: st.executor?.key, run: st.run }, 'following a task that was running');
      await w.executor.resume(run, st, x).catch(() => run.end({ exitCode: null, reason: 'lost' }));
    }
  }
  return { resumed, lost };
};
