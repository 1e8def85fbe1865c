/**
 * The generic element store (abstract-level style): the public method validates and
 * normalizes, the driver makes the backend object, the registry persists it with its event.
 * One `KindStore` serves every configured location of its kind, routing by the ID's store.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  describeId,
  formatStore,
  keyPrefix,
  decodeCallContext,
  decodeOptions,
  UpdateOptionsProps,
  invalidLocation,
  inUse,
  matches,
  notFound,
  parseId,
  permissionDenied,
  project,
  runtimeError,
  toId,
  unknownLocation,
  validateListFilter,
  validatePatch,
  validateReadFilter,
  applyPatch,
  conflict,
  type CallContext,
  type CreateError,
  type CreateRequest,
  type DeleteError,
  type Element,
  type ElementId,
  type InvalidEntry,
  type InvalidLocation,
  type UnknownLocation,
  type PermissionDenied,
  type NotFound,
  type ElementKind,
  type ElementStore,
  type IdLike,
  type ListFilter,
  type MetadataPatch,
  type ReadError,
  type ReadFilter,
  type UpdateError,
  type UpdateOptions,
  logError,
} from '@lessl/core';
import { specOnlyTaskDriver, type ElementDriver } from './drivers.js';
import { createElement, requestId } from './create.js';
import { guard, policyAllows, principalOf, route, type Wiring } from './wiring.js';
import type { Change, CompositionRecord, Intent } from './records.js';

const now = (): string => new Date().toISOString();

/** The store for one kind, over every configured location of it. */
export class KindStore implements ElementStore {
  constructor(
    private readonly w: Wiring,
    readonly kind: ElementKind,
  ) {}

  /** The first checks of an update or delete: the call's context, the ID's store, the store's policy. */
  private target(
    parsed: ElementId,
    rawCtx: unknown,
    op: 'update' | 'delete',
  ): E.Either<InvalidEntry | InvalidLocation | UnknownLocation, { id: ElementId; ctx: CallContext }> {
    const context = decodeCallContext(parsed.key, rawCtx);
    if (E.isLeft(context)) return context;
    const r = route(this.w, this.kind, parsed);
    if (E.isLeft(r)) return r;
    const { id, store } = r.right;
    if (!policyAllows(store, op)) return E.left(invalidLocation(id.key, store.policy ?? 'read-write', op));
    return E.right({ id, ctx: context.right });
  }

  /** Runs `fn` on the element under its lock, once the caller may `op` it (PermissionDenied) and it exists (NotFound). */
  private withElement<Er, A>(
    id: ElementId,
    ctx: CallContext,
    op: 'update' | 'delete',
    fn: (el: Element) => Promise<E.Either<Er, A>>,
  ): Promise<E.Either<Er | PermissionDenied | NotFound, A>> {
    return this.w.registry.locks.with([id.key], async () => {
      const el = this.w.registry.get(id.key);
      if (!this.w.authorize(principalOf(ctx), op, id.key, el)) return E.left(permissionDenied(id.key, principalOf(ctx), op));
      if (el === undefined) return E.left(notFound(id.key));
      return fn(el);
    });
  }

  private get driver(): ElementDriver | undefined {
    return this.kind === 'executor' ? undefined : this.w.drivers[this.kind];
  }

  create(request: CreateRequest, rawCtx?: CallContext): TaskEither<CreateError, Element> {
    return guard<CreateError, Element>(requestId(request), () => createElement(this.w, this.kind, this.driver, request, rawCtx));
  }

  read(rawId: IdLike, filter?: ReadFilter, rawCtx?: CallContext): TaskEither<ReadError, Element> {
    return guard<ReadError, Element>(describeId(rawId), async () => {
      const p = toId(rawId);
      if (E.isLeft(p)) return p;
      const f = validateReadFilter(p.right.key, filter);
      if (E.isLeft(f)) return f;
      const context = decodeCallContext(p.right.key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const r = route(this.w, this.kind, p.right);
      if (E.isLeft(r)) return r;
      const { id } = r.right;
      const el = this.w.registry.get(id.key);
      if (!this.w.authorize(principalOf(ctx), 'read', id.key, el))
        return E.left(permissionDenied(id.key, principalOf(ctx), 'read'));
      if (el === undefined) return E.left(notFound(id.key));
      return E.right(project(el, f.right));
    });
  }

  update(rawId: IdLike, patch: MetadataPatch, opts?: UpdateOptions, rawCtx?: CallContext): TaskEither<UpdateError, Element> {
    return guard<UpdateError, Element>(describeId(rawId), async () => {
      const parsed = toId(rawId);
      if (E.isLeft(parsed)) return parsed;
      const key = parsed.right.key;
      // the patch's shape now; its keys against the element's ro once the element is known
      const shape = validatePatch(key, patch, {});
      if (E.isLeft(shape)) return shape;
      const o = decodeOptions(UpdateOptionsProps, opts, 'update options', { id: key });
      if (E.isLeft(o)) return o;
      const ifRev = o.right.ifRevision;
      const target = this.target(parsed.right, rawCtx, 'update');
      if (E.isLeft(target)) return target;
      const { id, ctx } = target.right;
      const reg = this.w.registry;
      return this.withElement(id, ctx, 'update', async (el) => {
        if (ifRev !== undefined && ifRev !== el.revision) return E.left(conflict(id.key, ifRev, el.revision));
        const p = validatePatch(id.key, shape.right, el.ro);
        if (E.isLeft(p)) return p;
        const next: Element = { ...el, rw: applyPatch(el.rw, p.right), revision: el.revision + 1, modified: now() };
        try {
          await reg.commit({
            put: [next],
            events: [{ type: 'modified', id: id.key, revision: next.revision, detail: { keys: Object.keys(p.right) } }],
          });
        } catch (err) {
          this.w.log.error({ id: id.key, err: logError(err) }, 'registry write failed: could not persist the update');
          return E.left(runtimeError(id.key, 'could not persist the update', err));
        }
        return E.right(next);
      });
    });
  }

  delete(rawId: IdLike, rawCtx?: CallContext): TaskEither<DeleteError, void> {
    return guard<DeleteError, void>(describeId(rawId), async () => {
      const parsed = toId(rawId);
      if (E.isLeft(parsed)) return parsed;
      const target = this.target(parsed.right, rawCtx, 'delete');
      if (E.isLeft(target)) return target;
      const { id, ctx } = target.right;
      const reg = this.w.registry;
      return this.withElement(id, ctx, 'delete', async (el) => {
        const comp = this.kind === 'executor' ? reg.composition(id.key) : undefined;
        const refs = [
          ...reg.childrenOf(id.key),
          ...reg.usersOf(id.key),
          ...(comp?.members.filter((m) => m.state === 'bound').map((m) => m.id) ?? []),
        ];
        const driver = this.driver;
        if (driver?.references !== undefined) {
          const more = await driver.references(el);
          if (E.isLeft(more)) return more;
          refs.push(...more.right);
        }
        if (refs.length > 0) return E.left(inUse(id.key, [...new Set(refs)]));
        return removeElement(this.w, el, comp);
      });
    });
  }

  /**
   * Lists elements in ID order. Checks: the filter's shape (InvalidFilterSpec), then its store
   * (UnknownLocation), then the authorizer: `'list'` on the store address (`<kind>://<store>`, or
   * `<kind>://` without a store filter) answers PermissionDenied when refused, and `'read'` on each
   * element leaves out the elements the principal may not read.
   */
  list(filter?: ListFilter, rawCtx?: CallContext): TaskEither<ReadError, readonly Element[]> {
    return guard<ReadError, readonly Element[]>('', async () => {
      const f = validateListFilter(filter);
      if (E.isLeft(f)) return f;
      const lf = f.right;
      const context = decodeCallContext('', rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const where = lf.store === undefined ? keyPrefix(this.kind) : formatStore({ kind: this.kind, store: lf.store });
      if (lf.store !== undefined && !this.w.stores.has(where)) return E.left(unknownLocation(where, where));
      const principal = principalOf(ctx);
      if (!this.w.authorize(principal, 'list', where)) return E.left(permissionDenied(where, principal, 'list'));
      if (lf.kind !== undefined && lf.kind !== this.kind) return E.right([]);
      if (lf.parent !== undefined && E.isLeft(parseId(lf.parent))) return E.right([]);
      const limit = lf.limit ?? Number.POSITIVE_INFINITY;
      const pred = (el: Element): boolean => matches(el, lf) && this.w.authorize(principal, 'read', el.id.key, el);
      // Stores in key order, each scanned by prefix: the answer is in ID order without sorting.
      const names = [...this.w.stores.values()]
        .filter((c) => c.kind === this.kind && (lf.store === undefined || c.name === lf.store))
        .map((c) => c.name)
        .sort();
      const out: Element[] = [];
      for (const name of names) {
        if (out.length >= limit) break;
        for (const el of this.w.registry.scan(keyPrefix(this.kind, name, lf.namePrefix), limit - out.length, pred))
          out.push(project(el, lf));
      }
      return E.right(out);
    });
  }
}

/** The driver that destroys `el`'s backend objects (the executor driver for executors). */
type Destroyer = (el: Element, comp: CompositionRecord | undefined) => Promise<E.Either<DeleteError, void>>;

const destroyerOf =
  (w: Pick<Wiring, 'drivers' | 'executor'>): Destroyer =>
  async (el, comp) =>
    el.id.kind === 'executor' ? w.executor.destroy(el, comp) : w.drivers[el.id.kind].destroy(el);

/** The intent a delete writes before it destroys anything (`detail.op: 'delete'`). */
const deleteIntent = (el: Element): Intent => ({ id: el.id.key, started: now(), detail: { kind: el.id.kind, op: 'delete' } });

/** True for the intent of a delete (other intents are creates'). */
export const isDeleteIntent = (i: Intent): boolean => i.detail?.op === 'delete';

/** The batch that ends a delete: the record, its composition, its `deleted` event and the intent go together. */
const deleteBatch = (el: Element, comp: CompositionRecord | undefined): Change => ({
  del: [el.id.key],
  ...(comp === undefined ? {} : { delComposition: [el.id.key] }),
  delIntent: [el.id.key],
  events: [{ type: 'deleted', id: el.id.key, revision: el.revision, detail: {} }],
});

/**
 * Removes an element that may go, so that a failed registry write leaves the old state or the
 * new one, never a record without its data: (1) a delete intent is made durable, (2) the driver
 * destroys the backend objects, (3) the record, its event and the intent go in one batch. A
 * failed (1) changes nothing; a failed (2) drops the intent and the element stays; when (3)
 * fails (or the process dies before it) the next open finishes the delete (`finishDeletes`).
 */
const removeElement = async (
  w: Wiring,
  el: Element,
  comp: CompositionRecord | undefined,
): Promise<E.Either<DeleteError, void>> => {
  const reg = w.registry;
  const key = el.id.key;
  const unsaved = (err: unknown): E.Either<DeleteError, void> => {
    w.log.error({ id: key, err: logError(err) }, 'registry write failed: could not persist the delete');
    return E.left(runtimeError(key, 'could not persist the delete', err));
  };
  // phase 1: the intent, so that nothing is destroyed that the registry cannot forget (a task
  // that is only its spec has nothing outside the registry: one batch does)
  const outside = !(el.id.kind === 'task' && w.drivers.task === specOnlyTaskDriver);
  try {
    if (outside) await reg.commit({ putIntent: [deleteIntent(el)] });
  } catch (err) {
    return unsaved(err);
  }
  // phase 2: the backend objects; a failure keeps the element
  const gone = outside ? await destroyerOf(w)(el, comp) : E.right(undefined);
  if (E.isLeft(gone)) {
    await reg.commit({ delIntent: [key] }).catch(() => undefined);
    return gone;
  }
  // phase 3: the record goes with its event
  try {
    await reg.commit(deleteBatch(el, comp));
  } catch (err) {
    return unsaved(err);
  }
  if (el.id.kind === 'task') await reg.clearOutput(key).catch(() => undefined);
  return E.right(undefined);
};

/**
 * On open: finishes the deletes an interrupted delete left (a delete intent). The backend
 * objects are destroyed again (drivers' destroy is idempotent), then the record goes with its
 * `deleted` event; when they cannot be destroyed the element stays as it is and the intent is
 * dropped. Answers whether it deleted the element.
 */
export const finishDelete = async (
  w: Pick<Wiring, 'registry' | 'drivers' | 'executor' | 'log'>,
  intent: Intent,
): Promise<boolean> => {
  const reg = w.registry;
  const el = reg.get(intent.id);
  if (el === undefined) {
    await reg.commit({ delIntent: [intent.id] });
    return false;
  }
  const comp = reg.composition(intent.id);
  const gone = await destroyerOf(w)(el, comp);
  if (E.isLeft(gone)) {
    w.log.warn({ id: intent.id, err: gone.left.message }, 'an interrupted delete could not destroy the element: it stays');
    await reg.commit({ delIntent: [intent.id] });
    return false;
  }
  await reg.commit(deleteBatch(el, comp));
  if (el.id.kind === 'task') await reg.clearOutput(intent.id).catch(() => undefined);
  w.log.info({ id: intent.id }, 'finished an interrupted delete');
  return true;
};
