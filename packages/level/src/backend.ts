/**
 * Assembles a backend from the registry, store configs and drivers.
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  allowAll,
  invalidEntry,
  isElementKind,
  showValue,
  type Authorizer,
  type Composer,
  type ElementKind,
  type ElementStore,
  type EventSource,
  type InvalidEntry,
  type StoreConfig,
} from '@lessl/core';
import { GenericComposer } from './composer.js';
import { specOnlyTaskDriver, type ElementDriver, type ExecutorDriver } from './drivers.js';
import type { Registry } from './registry.js';
import { KindStore, storeKey, type Wiring } from './stores.js';

/** A running backend: one store per kind (routing by store name), the composer, the events. */
export interface Backend {
  readonly stores: Readonly<Record<ElementKind, ElementStore>>;
  readonly composer: Composer;
  readonly events: EventSource;
  readonly registry: Registry;
  /** Closes the registry (and whatever the backend holds). */
  close(): Promise<void>;
}

/** What `assemble` takes. */
export interface AssembleOptions {
  readonly registry: Registry;
  readonly stores: readonly StoreConfig[];
  readonly drivers: { readonly image: ElementDriver; readonly volume: ElementDriver; readonly task?: ElementDriver };
  readonly executor: ExecutorDriver;
  readonly authorize?: Authorizer;
  readonly onClose?: () => Promise<void>;
}

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
 * create left (the driver removes any half-made object; the intent is dropped).
 */
export const assemble = async (o: AssembleOptions): Promise<E.Either<InvalidEntry, Backend>> => {
  const stores = validateStores(o.stores);
  if (E.isLeft(stores)) return stores;
  const drivers = { image: o.drivers.image, volume: o.drivers.volume, task: o.drivers.task ?? specOnlyTaskDriver };
  for (const intent of o.registry.pendingIntents()) {
    const kind = intent.id.split(':')[0];
    const d =
      kind === 'executor' ? o.executor : kind === 'image' || kind === 'volume' || kind === 'task' ? drivers[kind] : undefined;
    await d?.recover?.(intent);
    await o.registry.commit({ delIntent: [intent.id] });
  }
  const w: Wiring = {
    registry: o.registry,
    stores: stores.right,
    authorize: o.authorize ?? allowAll,
    drivers,
    executor: o.executor,
  };
  return E.right({
    stores: {
      image: new KindStore(w, 'image'),
      volume: new KindStore(w, 'volume'),
      task: new KindStore(w, 'task'),
      executor: new KindStore(w, 'executor'),
    },
    composer: new GenericComposer(w),
    events: o.registry.events,
    registry: o.registry,
    close: async () => {
      await o.onClose?.();
      await o.registry.close();
    },
  });
};
