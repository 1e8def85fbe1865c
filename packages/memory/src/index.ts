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
  type Capabilities,
  type InvalidEntry,
  decodeOptions,
  fnC,
  instanceC,
  type StoreConfig,
  type RuntimeError,
} from '@lessl/core';
import { commonOpenOptions, openRegistry, Registry, registryOpenFailure, type CommonOpenOptions } from '@lessl/level';
import { assemble, type Backend, type ElementDriver } from '@lessl/kit';
import { executorDriver, type FaultHook } from './executor.js';
import { MemoryFunctions } from './functions.js';
import { tinyShell, type FakeProcess } from './process.js';

export { MemoryFunctions } from './functions.js';
export { tinyShell, type FakeExit, type FakeIO, type FakeProcess } from './process.js';
export type { FaultHook } from './executor.js';

/** Where the memory backend keeps data; share one between opens to simulate a persistent backend. */
export class MemoryData {
  /** Content bytes of images and volumes, by element ID. */
  readonly blobs = new Map<string, Uint8Array>();
}

/**
 * What the memory backend supports (its `Backend.supports`): parents and data for images and
 * volumes, a registry that reopens at its `location` (share one `MemoryData` for the content),
 * fake processes for tasks (daemons, restart policies, exec into a running executor, credentials
 * from the resolver). No hosts, Swarm, pool or image sources.
 */
export const MEMORY_CAPABILITIES: Capabilities = {
  parents: true,
  data: true,
  reopen: true,
  tasks: true,
  execIntoRunning: true,
  daemons: true,
  restartPolicies: true,
  hosts: false,
  swarm: false,
  pool: false,
  warmAgent: false,
  imageSources: false,
  credentials: true,
  ports: true,
};

/** The stores a memory backend has unless told otherwise. */
export const DEFAULT_STORES: readonly StoreConfig[] = [
  { kind: 'image', name: 'local' },
  { kind: 'volume', name: 'local' },
  { kind: 'volume', name: 'nfs', parents: false, options: { driver: 'nfs' } },
  { kind: 'task', name: 'local' },
  { kind: 'executor', name: 'local' },
];

/**
 * Options of `openMemoryBackend`: the common ones (a task's resolved `credentials` reach the fake
 * process's environment and `io.files`, which `cat` in the tiny shell reads), and these.
 */
export interface MemoryBackendOptions extends CommonOpenOptions {
  readonly data?: MemoryData;
  /** Test hook: make a commit step fail with this error (exercises rollback). */
  readonly faults?: FaultHook;
  /** How a bound task runs (default `tinyShell`: echo, sleep, exit, true, false, `sh -c`). */
  readonly run?: FakeProcess;
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

/** io-ts codecs of `MemoryBackendOptions` (exact: `openMemoryBackend` refuses unknown keys). */
export const MemoryBackendOptionsProps = {
  ...commonOpenOptions,
  data: instanceC('MemoryData', MemoryData),
  faults: fnC<FaultHook>('FaultHook'),
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
      functions: new MemoryFunctions(opts.run ?? tinyShell),
      supports: MEMORY_CAPABILITIES,
      ...(opts.outputBytes === undefined ? {} : { runtime: { outputBytes: opts.outputBytes } }),
      ...(opts.authorize === undefined ? {} : { authorize: opts.authorize }),
      ...(opts.authorizeFunction === undefined ? {} : { authorizeFunction: opts.authorizeFunction }),
      ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
      ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    }).catch((err: unknown) => E.left(runtimeError('', 'could not finish the interrupted writes of the registry', err)));
    if (E.isLeft(b)) await registry.close().catch(() => undefined);
    return b;
  };

/** The bytes of an image or volume (memory backend only). */
export const contentOf = (data: MemoryData, id: string): Uint8Array | undefined => data.blobs.get(id);
