/**
 * @lessl/memory: the reference backend. No Docker: image and volume data are kept in memory,
 * an executor is a state machine without processes. It passes the same conformance suite as
 * the Docker backend, so embedders can unit-test their own code against it.
 *
 * @example
 * const lessl = await unwrap(openMemoryBackend());
 * await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: tarBytes }));
 * @packageDocumentation
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  runtimeError,
  type AnyError,
  type Authorizer,
  type CredentialResolver,
  type InvalidEntry,
  type Logger,
  decodeOptions,
  fnC,
  instanceC,
  restarts,
  type StoreConfig,
  type RuntimeError,
  type TaskSpec,
} from '@lessl/core';
import {
  assemble,
  commonOpenOptions,
  openRegistry,
  type Durability,
  Registry,
  registryOpenFailure,
  type Backend,
  type CommitPlan,
  type DriverStepResult as StepResult,
  type ElementDriver,
  type ExecutorDriver,
  type PlanStep,
  type RegistryOptions,
  type RunSink,
} from '@lessl/level';
import { tinyShell, type FakeExit, type FakeIO, type FakeProcess } from './process.js';

export { tinyShell, type FakeExit, type FakeIO, type FakeProcess } from './process.js';

/** Where the memory backend keeps data; share one between opens to simulate a persistent backend. */
export class MemoryData {
  /** Content bytes of images and volumes, by element ID. */
  readonly blobs = new Map<string, Uint8Array>();
}

/** The stores a memory backend has unless told otherwise. */
export const DEFAULT_STORES: readonly StoreConfig[] = [
  { kind: 'image', name: 'local' },
  { kind: 'volume', name: 'local' },
  { kind: 'volume', name: 'nfs', parents: false, options: { driver: 'nfs' } },
  { kind: 'task', name: 'local' },
  { kind: 'executor', name: 'local' },
];

/** Options of `openMemoryBackend`. */
export interface MemoryBackendOptions {
  /** A registry, or how to open one (default: in memory). */
  readonly registry?: Registry | RegistryOptions;
  readonly stores?: readonly StoreConfig[];
  readonly authorize?: Authorizer;
  readonly data?: MemoryData;
  /** Test hook: make a commit step fail with this error (exercises rollback). */
  readonly faults?: (step: PlanStep) => AnyError | undefined;
  /** How a bound task runs (default `tinyShell`: echo, sleep, exit, true, false, `sh -c`). */
  readonly run?: FakeProcess;
  /** Output kept per task run (default 1 MiB). */
  readonly outputBytes?: number;
  /** How durable registry writes are when the backend opens the registry (default `process`; see `Durability`). */
  readonly durability?: Durability;
  /**
   * Resolves `spec.credentials` when a task starts: its `env` is added to the fake process's
   * environment, its `files` are readable through `io.files` (and `cat` in the tiny shell).
   * Without one, binding a task with credentials answers `Unsupported` (`spec.credentials`).
   */
  readonly credentials?: CredentialResolver;
  /**
   * Where the backend reports what it does (open, recovery, task start and end with exit code,
   * reason and duration, registry write failures): a pino logger, or anything with
   * `debug/info/warn/error(obj, msg?)`. Never given secrets. Default: no logging.
   */
  readonly logger?: Logger;
}

const concat = (parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);

const blobDriver = (data: MemoryData): ElementDriver => ({
  external: false,
  supportsData: true,
  async create(input) {
    const parts: Uint8Array[] = [];
    const base = input.parent === undefined ? undefined : data.blobs.get(input.parent.id.key);
    if (input.data !== undefined) {
      for await (const c of input.data.stream) parts.push(c);
      const v = input.data.verify();
      if (E.isLeft(v)) return v;
    }
    const own = concat(parts);
    const blob = input.id.kind === 'volume' && base !== undefined ? concat([base, own]) : own;
    data.blobs.set(input.id.key, blob);
    return E.right({
      attributes: {
        size: blob.byteLength,
        store: input.store.name,
        ...(input.store.options?.driver === undefined ? {} : { driver: input.store.options.driver }),
        ...(input.id.kind === 'image'
          ? { layers: (input.parent === undefined ? 0 : Number(input.parent.attributes.layers ?? 1)) + 1 }
          : {}),
      },
    });
  },
  async destroy(element) {
    data.blobs.delete(element.id.key);
    return E.right(undefined);
  },
});

/** True when a daemon's restart policy runs it again after this exit (`runs` restarts so far). */
const again = (spec: TaskSpec, exit: FakeExit, runs: number, signal: AbortSignal): boolean => {
  if (!restarts(spec) || signal.aborted) return false;
  const code = typeof exit === 'number' ? exit : exit.exitCode;
  const max = spec.restart?.maxRetries;
  if (max !== undefined && runs >= max) return false;
  return spec.restart?.policy === 'always' || code !== 0;
};

/**
 * Executors as state machines with fake processes: binding a task starts `run(spec, io)`.
 * On a stopped executor the task becomes its main process (the executor runs while it does);
 * on a running one it runs beside the main process, like an exec.
 */
const executorDriver = (run: FakeProcess, faults?: (s: PlanStep) => AnyError | undefined): ExecutorDriver => {
  const stopAll = new Set<AbortController>();
  const start = (sink: RunSink, main: boolean): void => {
    const ac = new AbortController();
    stopAll.add(ac);
    const enc = new TextEncoder();
    const bytes = (d: string | Uint8Array): Uint8Array => (typeof d === 'string' ? enc.encode(d) : d);
    const { env, files } = sink.secrets;
    const io: FakeIO = {
      files: new Map(files.map((f) => [f.path, f.data])),
      stdout: (d) => sink.output('stdout', bytes(d)),
      stderr: (d) => sink.output('stderr', bytes(d)),
      signal: ac.signal,
      sleep: (ms) =>
        new Promise<void>((res) => {
          if (ac.signal.aborted) return res();
          const t = setTimeout(done, ms);
          function done(): void {
            clearTimeout(t);
            ac.signal.removeEventListener('abort', done);
            res();
          }
          ac.signal.addEventListener('abort', done, { once: true });
        }),
    };
    sink.started({
      process: { fake: true, main },
      kill: async (signal) => {
        if (!ac.signal.aborted) ac.abort(signal);
      },
    });
    const spec = Object.keys(env).length === 0 ? sink.spec : { ...sink.spec, env: { ...sink.spec.env, ...env } };
    void (async () => {
      let exit: FakeExit;
      // restart policy (daemons only): run again after a failure (on-failure) or any end (always), unless killed
      for (let runs = 0; ; runs++) {
        try {
          exit = await run(spec, io);
        } catch (err) {
          io.stderr(`fake process failed: ${err instanceof Error ? err.message : String(err)}\n`);
          exit = 1;
        }
        if (!again(sink.spec, exit, runs, ac.signal)) break;
        await new Promise((r) => setTimeout(r, 0));
      }
      stopAll.delete(ac);
      const code = typeof exit === 'number' ? exit : exit.exitCode;
      const notFound = typeof exit === 'object' && exit.notFound === true;
      await sink.end({
        exitCode: code,
        ...(notFound ? { reason: 'not-found' as const } : {}),
        ...(main ? { executor: { state: 'stopped', mainTask: null } } : {}),
      });
    })().catch(() => sink.end({ exitCode: null, reason: 'lost' }).catch(() => undefined));
  };
  return {
    async commit(plan: CommitPlan) {
      const results: StepResult[] = [];
      let state = plan.attributes.state === 'running' ? 'running' : 'stopped';
      let mainTask = typeof plan.attributes.mainTask === 'string' ? plan.attributes.mainTask : null;
      for (const step of plan.steps) {
        const fault = faults?.(step);
        if (fault !== undefined) {
          results.push({ id: step.id, op: step.op, status: 'ERROR', error: fault });
          return E.left({ error: fault, results });
        }
        if (plan.signal?.aborted === true) {
          const e = aborted(step.id, plan.signal.reason);
          results.push({ id: step.id, op: step.op, status: 'ERROR', error: e });
          return E.left({ error: e, results });
        }
        if (step.op === 'unbind' && step.member?.id.kind === 'task') {
          await plan.runs.stop(step.id, 'TERM', 0);
          if (mainTask === step.id) {
            state = 'stopped';
            mainTask = null;
          }
        } else if (step.op === 'bind' && step.member?.id.kind === 'task') {
          const main = state !== 'running';
          start(plan.runs.open(step.id), main);
          if (main) {
            state = 'running';
            mainTask = step.id;
          }
        }
        results.push({ id: step.id, op: step.op, status: 'SUCCESS' });
      }
      return E.right({
        results,
        attributes: {
          state,
          mainTask,
          rootfs: plan.after.find((m) => m.id.kind === 'image')?.id.key ?? null,
          mounts: plan.after
            .filter((m) => m.id.kind === 'volume')
            .map((m) => ({ volume: m.id.key, at: m.mountpoint, readOnly: m.readOnly })),
        },
      });
    },
    async undo() {},
    async destroy() {
      return E.right(undefined);
    },
    async close() {
      // fake processes die with the backend, as processes die with their machine
      for (const ac of stopAll) ac.abort('KILL');
    },
  };
};

/** io-ts codecs of `MemoryBackendOptions` (exact: `openMemoryBackend` refuses unknown keys). */
export const MemoryBackendOptionsProps = {
  ...commonOpenOptions,
  data: instanceC('MemoryData', MemoryData),
  faults: fnC<(step: PlanStep) => AnyError | undefined>('FaultHook'),
  run: fnC<FakeProcess>('FakeProcess'),
};

/**
 * Opens a memory backend. Answers `InvalidEntry` for options of the wrong shape (unknown keys
 * or wrong types, named) or a bad store configuration, and `RuntimeError` when the registry
 * cannot be opened.
 * @example
 * const lessl = await unwrap(openMemoryBackend());
 * await unwrap(lessl.stores.task.create({ id: 'task://local/t', spec: { cmd: ['echo', 'hi'] } }));
 */
export const openMemoryBackend =
  (options: MemoryBackendOptions = {}): TaskEither<InvalidEntry | RuntimeError, Backend> =>
  async () => {
    const decoded = decodeOptions(MemoryBackendOptionsProps, options, 'memory backend options');
    if (E.isLeft(decoded)) return decoded;
    const opts: MemoryBackendOptions = decoded.right;
    let registry: Registry;
    try {
      registry = await openRegistry(opts.registry, opts.durability);
    } catch (err) {
      return E.left(runtimeError('', registryOpenFailure(opts.registry, err), err));
    }
    const data = opts.data ?? new MemoryData();
    const blobs = blobDriver(data);
    const b: E.Either<InvalidEntry | RuntimeError, Backend> = await assemble({
      registry,
      stores: opts.stores ?? DEFAULT_STORES,
      drivers: { image: blobs, volume: blobs },
      executor: executorDriver(opts.run ?? tinyShell, opts.faults),
      ...(opts.outputBytes === undefined ? {} : { runtime: { outputBytes: opts.outputBytes } }),
      ...(opts.authorize === undefined ? {} : { authorize: opts.authorize }),
      ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
      ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    }).catch((err: unknown) => E.left(runtimeError('', 'could not finish the interrupted writes of the registry', err)));
    if (E.isLeft(b)) await registry.close().catch(() => undefined);
    return b;
  };

/** The bytes of an image or volume (memory backend only). */
export const contentOf = (data: MemoryData, id: string): Uint8Array | undefined => data.blobs.get(id);
