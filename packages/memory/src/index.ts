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
  runtimeError,
  type AnyError,
  type Authorizer,
  type InvalidEntry,
  type StepResult,
  type StoreConfig,
  type RuntimeError,
} from '@lessl/core';
import {
  assemble,
  Registry,
  type Backend,
  type CommitPlan,
  type ElementDriver,
  type ExecutorDriver,
  type PlanStep,
  type RegistryOptions,
} from '@lessl/level';

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

const executorDriver = (faults?: (s: PlanStep) => AnyError | undefined): ExecutorDriver => ({
  async commit(plan: CommitPlan) {
    const results: StepResult[] = [];
    for (const step of plan.steps) {
      const fault = faults?.(step);
      if (fault !== undefined) {
        results.push({ id: step.id, op: step.op, status: 'ERROR', error: fault });
        return E.left({ error: fault, results });
      }
      results.push({ id: step.id, op: step.op, status: 'SUCCESS' });
    }
    const running = plan.after.some((m) => m.id.kind === 'task' && m.state === 'bound');
    return E.right({
      results,
      attributes: {
        state: running ? 'running' : 'stopped',
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
});

/**
 * Opens a memory backend. Answers `InvalidEntry` for a bad store configuration and
 * `RuntimeError` when the registry cannot be opened.
 */
export const openMemoryBackend =
  (opts: MemoryBackendOptions = {}): TaskEither<InvalidEntry | RuntimeError, Backend> =>
  async () => {
    let registry: Registry;
    try {
      registry = opts.registry instanceof Registry ? opts.registry : await Registry.open(opts.registry ?? { memory: true });
    } catch (err) {
      return E.left(runtimeError('', 'could not open the registry', err));
    }
    const data = opts.data ?? new MemoryData();
    const blobs = blobDriver(data);
    const b = await assemble({
      registry,
      stores: opts.stores ?? DEFAULT_STORES,
      drivers: { image: blobs, volume: blobs },
      executor: executorDriver(opts.faults),
      ...(opts.authorize === undefined ? {} : { authorize: opts.authorize }),
    });
    if (E.isLeft(b)) await registry.close();
    return b;
  };

/** The bytes of an image or volume (memory backend only). */
export const contentOf = (data: MemoryData, id: string): Uint8Array | undefined => data.blobs.get(id);
