/**
 * The generic element store (abstract-level style): the public method validates and
 * normalizes, the driver makes the backend object, the registry persists it with its event.
 * One `KindStore` serves every configured location of its kind, routing by the ID's store.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  describeId,
  describeCause,
  decodeTaskSpec,
  decodeCallContext,
  decodeOptions,
  CreateRequestProps,
  UpdateOptionsProps,
  hashing,
  invalidEntry,
  invalidLocation,
  invalidParent,
  inUse,
  isDataSource,
  isLesslError,
  jsonData,
  DataError,
  checksumMismatch,
  formatChecksum,
  matches,
  nameCollision,
  notFound,
  parseChecksum,
  parseId,
  permissionDenied,
  project,
  runtimeError,
  toId,
  unknownLocation,
  unknownParent,
  unsupported,
  validateCreateMetadata,
  validateListFilter,
  validatePatch,
  validateReadFilter,
  applyPatch,
  conflict,
  type Authorizer,
  type CallContext,
  type CreateError,
  type CredentialResolver,
  type CreateRequest,
  type DeleteError,
  type Element,
  type ElementId,
  type ElementKind,
  type ElementStore,
  type IdLike,
  type InvalidEntry,
  type ListFilter,
  type MetadataPatch,
  type Operation,
  type ReadError,
  type ReadFilter,
  type StoreConfig,
  type TaskSpec,
  type UpdateError,
  type UpdateOptions,
  logError,
  type Logger,
} from '@lessl/core';
import { specOnlyTaskDriver, type ElementDriver, type ExecutorDriver, type VerifiedData } from './drivers.js';
import type { Change, CompositionRecord, Intent } from './records.js';
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
export const storeKey = (c: { kind: string; name: string }): string => `${c.kind}://${c.name}`;

const now = (): string => new Date().toISOString();
const principalOf = (ctx?: CallContext): string => ctx?.principal ?? 'anonymous';

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
      ...unknownLocation(id.key, `${id.kind}://${id.store}`),
      message: `unknown location: the ${kind} store has no location ${id.kind}://${id.store}`,
    });
  const store = w.stores.get(`${kind}://${id.store}`);
  if (store === undefined) return E.left(unknownLocation(id.key, `${kind}://${id.store}`));
  return E.right({ id, store });
};

const policyAllows = (s: StoreConfig, op: Operation): boolean => {
  const p = s.policy ?? 'read-write';
  if (p === 'read-write') return true;
  if (p === 'read-only') return op === 'read' || op === 'list';
  return op !== 'update' && op !== 'delete'; // create-only
};

/** The fields of a create request, each read once; unknown fields, or a request that is not an object or cannot be read, are InvalidEntry. */
const readRequest = (req: unknown): E.Either<InvalidEntry, CreateRequest> => {
  if (typeof req !== 'object' || req === null) return E.left(invalidEntry('a create request must be an object', '', ['request']));
  return decodeOptions(CreateRequestProps, req, 'create request', { prefix: '' }) as E.Either<InvalidEntry, CreateRequest>;
};

/** Create options from a caller: a record of JSON data (see `jsonData`), copied. */
const readCreateOptions = (id: string, o: unknown): E.Either<InvalidEntry, Readonly<Record<string, unknown>>> => {
  if (o === undefined) return E.right({});
  const c = jsonData(o);
  if (E.isLeft(c)) return E.left(invalidEntry(`invalid options: ${c.left}`, id, ['options']));
  if (typeof c.right !== 'object' || c.right === null || Array.isArray(c.right))
    return E.left(invalidEntry('options must be an object', id, ['options']));
  return E.right(c.right as Readonly<Record<string, unknown>>);
};

/** The store for one kind, over every configured location of it. */
export class KindStore implements ElementStore {
  constructor(
    private readonly w: Wiring,
    readonly kind: ElementKind,
  ) {}

  private get driver(): ElementDriver | undefined {
    return this.kind === 'executor' ? undefined : this.w.drivers[this.kind];
  }

  create(request: CreateRequest, rawCtx?: CallContext): TaskEither<CreateError, Element> {
    const read = readRequest(request);
    return guard<CreateError, Element>(E.isRight(read) ? describeId(read.right.id) : '', async () => {
      // input shape
      if (E.isLeft(read)) return read;
      const req = read.right;
      const parsed = toId(req.id);
      if (E.isLeft(parsed)) return parsed;
      const key = parsed.right.key;
      const context = decodeCallContext(key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const md = validateCreateMetadata(key, req.ro, req.rw);
      if (E.isLeft(md)) return md;
      const checksum = req.checksum === undefined ? undefined : parseChecksum(key, req.checksum);
      if (checksum !== undefined && E.isLeft(checksum)) return checksum;
      if (req.data !== undefined && !isDataSource(req.data))
        return E.left(invalidEntry('data must be bytes or an async iterable of bytes', key, ['data']));
      if (checksum !== undefined && req.data === undefined)
        return E.left(invalidEntry('a checksum was given without data', key, ['checksum']));
      // kind-specific fields are judged by the ID's kind (an ID of another kind is UnknownLocation below)
      let spec: TaskSpec | undefined;
      if (parsed.right.kind === 'task') {
        const sp = decodeTaskSpec(key, req.spec);
        if (E.isLeft(sp)) return sp;
        spec = sp.right;
      } else if (req.spec !== undefined) return E.left(invalidEntry(`only tasks take a spec`, key, ['spec']));
      const options = readCreateOptions(key, req.options);
      if (E.isLeft(options)) return options;
      let parentId: ElementId | undefined;
      if (req.parent !== undefined) {
        const pp = toId(req.parent);
        if (E.isLeft(pp)) return E.left(invalidEntry(`malformed parent ID: ${pp.left.message}`, key, ['parent']));
        parentId = pp.right;
      }
      if (ctx?.signal?.aborted === true) return E.left(aborted(key, ctx.signal.reason));
      // location, then authorization
      const r = route(this.w, this.kind, parsed.right);
      if (E.isLeft(r)) return r;
      const { id, store } = r.right;
      if (!policyAllows(store, 'create')) return E.left(invalidLocation(id.key, store.policy ?? 'read-write', 'create'));
      if (!this.w.authorize(principalOf(ctx), 'create', id.key))
        return E.left(permissionDenied(id.key, principalOf(ctx), 'create'));
      const driver = this.driver;
      if (req.data !== undefined && driver?.supportsData !== true)
        return E.left(unsupported(id.key, `data for ${this.kind} elements`));
      const reg = this.w.registry;
      // the parent is only read: a shared lock, so many children can be made from one parent at once
      return reg.locks.with(
        [id.key],
        async () => {
          if (reg.get(id.key) !== undefined || reg.hasIntent(id.key)) return E.left(nameCollision(id.key));
          let parent: Element | undefined;
          if (parentId !== undefined) {
            if (store.parents === false)
              return E.left(invalidParent(id.key, parentId.key, `store ${store.kind}://${store.name} does not allow parents`));
            if (parentId.kind !== id.kind)
              return E.left(invalidParent(id.key, parentId.key, `a ${parentId.kind} cannot be the parent of a ${id.kind}`));
            if (parentId.key === id.key)
              return E.left(invalidParent(id.key, parentId.key, 'an element cannot be its own parent'));
            parent = reg.get(parentId.key);
            if (parent === undefined) return E.left(unknownParent(id.key, parentId.key));
            if (this.kind === 'task' || this.kind === 'executor')
              return E.left(invalidParent(id.key, parentId.key, `${this.kind} elements have no parents`));
          }
          const data: VerifiedData | undefined =
            req.data === undefined
              ? undefined
              : (() => {
                  const h = hashing(id.key, req.data);
                  return {
                    stream: h.stream,
                    verify: () => {
                      const got = h.digest();
                      if (checksum !== undefined && E.isRight(checksum) && formatChecksum(checksum.right) !== got)
                        return E.left(checksumMismatch(id.key, formatChecksum(checksum.right), got));
                      return E.right(got);
                    },
                  };
                })();
          const external = driver?.external === true;
          if (external) await reg.commit({ putIntent: [{ id: id.key, started: now(), detail: { kind: id.kind } }] });
          const made =
            driver === undefined
              ? E.right<CreateError, { attributes: Readonly<Record<string, unknown>>; checksum?: string }>({
                  attributes: { state: 'empty' },
                })
              : await driver
                  .create({
                    id,
                    store,
                    ...(parent === undefined ? {} : { parent }),
                    ...(data === undefined ? {} : { data }),
                    ro: md.right.ro,
                    rw: md.right.rw,
                    ...(spec === undefined ? {} : { spec }),
                    options: options.right,
                    ...(ctx?.signal === undefined ? {} : { signal: ctx.signal }),
                    ...(typeof ctx?.onProgress === 'function' ? { progress: ctx.onProgress } : {}),
                  })
                  .catch((err: unknown) =>
                    E.left<CreateError>(
                      err instanceof DataError ? err.error : runtimeError(id.key, `create failed: ${describeCause(err)}`, err),
                    ),
                  );
          const t = now();
          const element = (attributes: Readonly<Record<string, unknown>>, digest?: string): Element => ({
            id,
            ...(parent === undefined ? {} : { parent: parent.id }),
            ro: md.right.ro,
            rw: md.right.rw,
            ...(digest === undefined ? {} : { checksum: digest }),
            revision: 1,
            created: t,
            modified: t,
            attributes: { ...attributes },
          });
          if (E.isLeft(made)) {
            if (external) await reg.commit({ delIntent: [id.key] });
            return made;
          }
          const verified = data?.verify();
          if (verified !== undefined && E.isLeft(verified)) {
            await driver?.destroy(element(made.right.attributes)).catch(() => undefined);
            if (external) await reg.commit({ delIntent: [id.key] });
            return verified;
          }
          const el = element(made.right.attributes, made.right.checksum ?? (verified === undefined ? undefined : verified.right));
          try {
            await reg.commit({
              put: [el],
              ...(external ? { delIntent: [id.key] } : {}),
              events: [
                {
                  type: 'created',
                  id: id.key,
                  revision: 1,
                  detail: {
                    ...(parent === undefined ? {} : { parent: parent.id.key }),
                    ...(el.checksum === undefined ? {} : { checksum: el.checksum }),
                  },
                },
              ],
            });
          } catch (err) {
            await driver?.destroy(el).catch(() => undefined);
            this.w.log.error({ id: id.key, err: logError(err) }, 'registry write failed: could not persist the element');
            return E.left(runtimeError(id.key, 'could not persist the element', err));
          }
          return E.right(el);
        },
        parentId === undefined ? [] : [parentId.key],
      );
    });
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
      const context = decodeCallContext(key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const r = route(this.w, this.kind, parsed.right);
      if (E.isLeft(r)) return r;
      const { id, store } = r.right;
      if (!policyAllows(store, 'update')) return E.left(invalidLocation(id.key, store.policy ?? 'read-write', 'update'));
      const reg = this.w.registry;
      return reg.locks.with([id.key], async () => {
        const el = reg.get(id.key);
        if (!this.w.authorize(principalOf(ctx), 'update', id.key, el))
          return E.left(permissionDenied(id.key, principalOf(ctx), 'update'));
        if (el === undefined) return E.left(notFound(id.key));
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
      const context = decodeCallContext(parsed.right.key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const r = route(this.w, this.kind, parsed.right);
      if (E.isLeft(r)) return r;
      const { id, store } = r.right;
      if (!policyAllows(store, 'delete')) return E.left(invalidLocation(id.key, store.policy ?? 'read-write', 'delete'));
      const reg = this.w.registry;
      return reg.locks.with([id.key], async () => {
        const el = reg.get(id.key);
        if (!this.w.authorize(principalOf(ctx), 'delete', id.key, el))
          return E.left(permissionDenied(id.key, principalOf(ctx), 'delete'));
        if (el === undefined) return E.left(notFound(id.key));
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
      const where = `${this.kind}://${lf.store ?? ''}`;
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
        for (const el of this.w.registry.scan(`${this.kind}://${name}/${lf.namePrefix ?? ''}`, limit - out.length, pred))
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
