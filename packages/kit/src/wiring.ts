/**
 * What the stores, the composer and the task lifecycle share: the wiring (registry port, store
 * configs, authorizer, drivers, runtime, logger) and the first checks of every call (routing an
 * ID to its store, the store's policy, the caller's principal, the guard that types failures).
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  describeCause,
  formatStore,
  DataError,
  isLesslError,
  runtimeError,
  toId,
  unknownLocation,
  type invalidEntry,
  type Authorizer,
  type CallContext,
  type CredentialResolver,
  type ElementId,
  type ElementKind,
  type IdLike,
  type Logger,
  type Operation,
  type StoreConfig,
} from '@lessl/core';
import type { ElementDriver, ExecutorDriver } from './drivers.js';
import type { RegistryPort } from './port.js';
import type { TaskRuntime } from './runtime.js';

/** Shared wiring of the stores and the composer. */
export interface Wiring {
  readonly registry: RegistryPort;
  readonly stores: ReadonlyMap<string, StoreConfig>;
  readonly authorize: Authorizer;
  readonly drivers: { readonly image: ElementDriver; readonly volume: ElementDriver; readonly task: ElementDriver };
  readonly executor: ExecutorDriver;
  readonly runtime: TaskRuntime;
  /** Resolves task credentials when a task starts (none: a spec with credentials is Unsupported). */
  readonly credentials?: CredentialResolver;
  /** Where the backend reports what it does (a no-op by default). */
  readonly log: Logger;
}

/** `<kind>://<store>` of a config. */
export const storeKey = (c: { kind: ElementKind; name: string }): string => formatStore({ kind: c.kind, store: c.name });

/** The caller's principal (`anonymous` without one). */
export const principalOf = (ctx?: CallContext): string => ctx?.principal ?? 'anonymous';

/** Runs an async body; anything thrown becomes RuntimeError (or the DataError it carries). */
export const guard =
  <Er, A>(id: string, body: () => Promise<E.Either<Er, A>>): TaskEither<Er | ReturnType<typeof runtimeError>, A> =>
  async () => {
    try {
      return await body();
    } catch (err) {
      if (err instanceof DataError) return E.left(err.error as never);
      if (isLesslError(err)) return E.left(err as never);
      return E.left(runtimeError(id, `unexpected failure: ${describeCause(err)}`, err));
    }
  };

/** Resolves an ID against a kind store: parsed ID and its store config, or the error. */
export const route = (
  w: Wiring,
  kind: ElementKind,
  raw: IdLike,
): E.Either<ReturnType<typeof invalidEntry> | ReturnType<typeof unknownLocation>, { id: ElementId; store: StoreConfig }> => {
  const p = toId(raw);
  if (E.isLeft(p)) return p;
  const id = p.right;
  if (id.kind !== kind)
    return E.left({
      ...unknownLocation(id.key, formatStore(id)),
      message: `unknown location: the ${kind} store has no location ${formatStore(id)}`,
    });
  const where = formatStore({ kind, store: id.store });
  const store = w.stores.get(where);
  if (store === undefined) return E.left(unknownLocation(id.key, where));
  return E.right({ id, store });
};

/** True when the store's policy allows `op`. */
export const policyAllows = (s: StoreConfig, op: Operation): boolean => {
  const p = s.policy ?? 'read-write';
  if (p === 'read-write') return true;
  if (p === 'read-only') return op === 'read' || op === 'list';
  return op !== 'update' && op !== 'delete'; // create-only
};
