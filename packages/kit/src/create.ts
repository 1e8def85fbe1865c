/**
 * `create` of the generic store, in phases: read the request (shape), admit it (location,
 * policy, authorization), then under the element's lock: check the name and the parent, make the
 * backend object (with a write intent when the driver makes objects outside the registry), and
 * persist the record with its `created` event. A failure after the object was made destroys it.
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  aborted,
  checksumMismatch,
  CreateRequestProps,
  DataError,
  decodeCallContext,
  decodeOptions,
  decodeTaskSpec,
  describeCause,
  describeId,
  formatChecksum,
  hashing,
  invalidEntry,
  invalidLocation,
  invalidParent,
  isDataSource,
  jsonData,
  logError,
  nameCollision,
  parseChecksum,
  permissionDenied,
  runtimeError,
  toId,
  unknownParent,
  unsupported,
  validateCreateMetadata,
  type CallContext,
  type Checksum,
  type CreateError,
  type DataSource,
  type Element,
  type ElementId,
  type ElementKind,
  type InvalidEntry,
  type Metadata,
  type StoreConfig,
  type TaskSpec,
} from '@lessl/core';
import type { DriverCreated, ElementDriver, VerifiedData } from './drivers.js';
import { policyAllows, principalOf, route, storeKey, type Wiring } from './wiring.js';

/** A create request read once and checked for shape. */
interface CreateInput {
  readonly id: ElementId;
  readonly ctx: CallContext;
  readonly md: { readonly ro: Metadata; readonly rw: Metadata };
  readonly checksum?: Checksum;
  readonly data?: DataSource;
  readonly spec?: TaskSpec;
  readonly options: Readonly<Record<string, unknown>>;
  readonly parentId?: ElementId;
}

/** Where a create goes, once admitted. */
interface Admitted extends CreateInput {
  readonly store: StoreConfig;
}

const now = (): string => new Date().toISOString();

/** The fields of a create request, each read once; unknown fields, or a request that is not an object or cannot be read, are InvalidEntry. */
const decodeRequest = (req: unknown) => {
  if (typeof req !== 'object' || req === null) return E.left(invalidEntry('a create request must be an object', '', ['request']));
  return decodeOptions(CreateRequestProps, req, 'create request', { prefix: '' });
};

/** Create options from a caller: a record of JSON data (see `jsonData`), copied. */
const readCreateOptions = (id: string, o: unknown): E.Either<InvalidEntry, Readonly<Record<string, unknown>>> => {
  if (o === undefined) return E.right({});
  const c = jsonData(o);
  if (E.isLeft(c)) return E.left(invalidEntry(`invalid options: ${c.left}`, id, ['options']));
  const v: unknown = c.right;
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return E.left(invalidEntry('options must be an object', id, ['options']));
  return E.right({ ...v });
};

/** The spec of a task (decoded); other kinds take none. */
const readSpec = (id: ElementId, spec: unknown): E.Either<CreateError, TaskSpec | undefined> => {
  if (id.kind === 'task') return decodeTaskSpec(id.key, spec);
  return spec === undefined ? E.right(undefined) : E.left(invalidEntry(`only tasks take a spec`, id.key, ['spec']));
};

/** Phase 1, the request's shape: ID, context, metadata, checksum, data, spec, options, parent. */
const readCreate = (request: unknown, rawCtx: unknown): E.Either<CreateError, CreateInput> => {
  const read = decodeRequest(request);
  if (E.isLeft(read)) return read;
  const req = read.right;
  const parsed = toId(req.id);
  if (E.isLeft(parsed)) return parsed;
  const id = parsed.right;
  const ctx = decodeCallContext(id.key, rawCtx);
  if (E.isLeft(ctx)) return ctx;
  const md = validateCreateMetadata(id.key, req.ro, req.rw);
  if (E.isLeft(md)) return md;
  const checksum = req.checksum === undefined ? undefined : parseChecksum(id.key, req.checksum);
  if (checksum !== undefined && E.isLeft(checksum)) return checksum;
  if (req.data !== undefined && !isDataSource(req.data))
    return E.left(invalidEntry('data must be bytes or an async iterable of bytes', id.key, ['data']));
  if (checksum !== undefined && req.data === undefined)
    return E.left(invalidEntry('a checksum was given without data', id.key, ['checksum']));
  const spec = readSpec(id, req.spec);
  if (E.isLeft(spec)) return spec;
  const options = readCreateOptions(id.key, req.options);
  if (E.isLeft(options)) return options;
  const parent = req.parent === undefined ? undefined : toId(req.parent);
  if (parent !== undefined && E.isLeft(parent))
    return E.left(invalidEntry(`malformed parent ID: ${parent.left.message}`, id.key, ['parent']));
  return E.right({
    id,
    ctx: ctx.right,
    md: md.right,
    ...(checksum === undefined ? {} : { checksum: checksum.right }),
    ...(req.data === undefined ? {} : { data: req.data }),
    ...(spec.right === undefined ? {} : { spec: spec.right }),
    options: options.right,
    ...(parent === undefined ? {} : { parentId: parent.right }),
  });
};

/** Phase 2: not aborted, a configured location whose policy allows creates, an authorized caller, data the driver takes. */
const admit = (
  w: Wiring,
  kind: ElementKind,
  driver: ElementDriver | undefined,
  input: CreateInput,
): E.Either<CreateError, Admitted> => {
  const { ctx } = input;
  if (ctx.signal?.aborted === true) return E.left(aborted(input.id.key, ctx.signal.reason));
  const r = route(w, kind, input.id);
  if (E.isLeft(r)) return r;
  const { id, store } = r.right;
  if (!policyAllows(store, 'create')) return E.left(invalidLocation(id.key, store.policy ?? 'read-write', 'create'));
  if (!w.authorize(principalOf(ctx), 'create', id.key)) return E.left(permissionDenied(id.key, principalOf(ctx), 'create'));
  if (input.data !== undefined && driver?.supportsData !== true) return E.left(unsupported(id.key, `data for ${kind} elements`));
  return E.right({ ...input, id, store });
};

/** Phase 3: a free name, and the parent, when one is given, allowed and present. */
const checkTarget = (w: Wiring, a: Admitted): E.Either<CreateError, Element | undefined> => {
  const { id, store, parentId } = a;
  const reg = w.registry;
  if (reg.get(id.key) !== undefined || reg.hasIntent(id.key)) return E.left(nameCollision(id.key));
  if (parentId === undefined) return E.right(undefined);
  const refuse = (why: string): E.Either<CreateError, never> => E.left(invalidParent(id.key, parentId.key, why));
  if (store.parents === false) return refuse(`store ${storeKey(store)} does not allow parents`);
  if (parentId.kind !== id.kind) return refuse(`a ${parentId.kind} cannot be the parent of a ${id.kind}`);
  if (parentId.key === id.key) return refuse('an element cannot be its own parent');
  const parent = reg.get(parentId.key);
  if (parent === undefined) return E.left(unknownParent(id.key, parentId.key));
  if (id.kind === 'task' || id.kind === 'executor') return refuse(`${id.kind} elements have no parents`);
  return E.right(parent);
};

/** The data, hashed as the driver consumes it, and checked against the checksum once consumed. */
const verifiedData = (key: string, data: DataSource, checksum: Checksum | undefined): VerifiedData => {
  const h = hashing(key, data);
  return {
    stream: h.stream,
    verify: () => {
      const got = h.digest();
      if (checksum !== undefined && formatChecksum(checksum) !== got)
        return E.left(checksumMismatch(key, formatChecksum(checksum), got));
      return E.right(got);
    },
  };
};

/** Phase 4: the backend object (an executor has none until its first commit). */
const makeObject = async (
  driver: ElementDriver | undefined,
  a: Admitted,
  parent: Element | undefined,
  data: VerifiedData | undefined,
): Promise<E.Either<CreateError, DriverCreated>> => {
  if (driver === undefined) return E.right({ attributes: { state: 'empty' } });
  const { ctx } = a;
  return driver
    .create({
      id: a.id,
      store: a.store,
      ...(parent === undefined ? {} : { parent }),
      ...(data === undefined ? {} : { data }),
      ro: a.md.ro,
      rw: a.md.rw,
      ...(a.spec === undefined ? {} : { spec: a.spec }),
      options: a.options,
      ...(ctx.signal === undefined ? {} : { signal: ctx.signal }),
      ...(typeof ctx.onProgress === 'function' ? { progress: ctx.onProgress } : {}),
    })
    .catch((err: unknown) =>
      E.left<CreateError>(
        err instanceof DataError ? err.error : runtimeError(a.id.key, `create failed: ${describeCause(err)}`, err),
      ),
    );
};

/** The element record a create writes. */
const recordOf = (a: Admitted, parent: Element | undefined, made: DriverCreated, digest: string | undefined): Element => {
  const t = now();
  return {
    id: a.id,
    ...(parent === undefined ? {} : { parent: parent.id }),
    ro: a.md.ro,
    rw: a.md.rw,
    ...(digest === undefined ? {} : { checksum: digest }),
    revision: 1,
    created: t,
    modified: t,
    attributes: { ...made.attributes },
  };
};

/** Phase 5: the record, its `created` event and the intent's removal in one write; a failed write destroys the object. */
const persist = async (
  w: Wiring,
  driver: ElementDriver | undefined,
  el: Element,
  external: boolean,
): Promise<E.Either<CreateError, Element>> => {
  const key = el.id.key;
  try {
    await w.registry.commit({
      put: [el],
      ...(external ? { delIntent: [key] } : {}),
      events: [
        {
          type: 'created',
          id: key,
          revision: 1,
          detail: {
            ...(el.parent === undefined ? {} : { parent: el.parent.key }),
            ...(el.checksum === undefined ? {} : { checksum: el.checksum }),
          },
        },
      ],
    });
  } catch (err) {
    await driver?.destroy(el).catch(() => undefined);
    w.log.error({ id: key, err: logError(err) }, 'registry write failed: could not persist the element');
    return E.left(runtimeError(key, 'could not persist the element', err));
  }
  return E.right(el);
};

/** Phases 3 to 5, under the element's lock (the parent's shared: many children can be made from one parent at once). */
const createLocked = async (
  w: Wiring,
  driver: ElementDriver | undefined,
  a: Admitted,
): Promise<E.Either<CreateError, Element>> => {
  const reg = w.registry;
  const key = a.id.key;
  const target = checkTarget(w, a);
  if (E.isLeft(target)) return target;
  const parent = target.right;
  const data = a.data === undefined ? undefined : verifiedData(key, a.data, a.checksum);
  const external = driver?.external === true;
  const dropIntent = async (): Promise<void> => {
    if (external) await reg.commit({ delIntent: [key] });
  };
  if (external) await reg.commit({ putIntent: [{ id: key, started: now(), detail: { kind: a.id.kind } }] });
  const made = await makeObject(driver, a, parent, data);
  if (E.isLeft(made)) {
    await dropIntent();
    return made;
  }
  const verified = data?.verify();
  if (verified !== undefined && E.isLeft(verified)) {
    await driver?.destroy(recordOf(a, parent, made.right, undefined)).catch(() => undefined);
    await dropIntent();
    return verified;
  }
  return persist(w, driver, recordOf(a, parent, made.right, made.right.checksum ?? verified?.right), external);
};

/** `create` of the store of `kind`: see the module's comment for its phases. */
export const createElement = async (
  w: Wiring,
  kind: ElementKind,
  driver: ElementDriver | undefined,
  request: unknown,
  rawCtx: unknown,
): Promise<E.Either<CreateError, Element>> => {
  const input = readCreate(request, rawCtx);
  if (E.isLeft(input)) return input;
  const admitted = admit(w, kind, driver, input.right);
  if (E.isLeft(admitted)) return admitted;
  const a = admitted.right;
  return w.registry.locks.with([a.id.key], () => createLocked(w, driver, a), a.parentId === undefined ? [] : [a.parentId.key]);
};

/** The ID a create request names, for errors raised before it is read (empty when unreadable). */
export const requestId = (request: unknown): string => {
  const read = decodeRequest(request);
  return E.isRight(read) ? describeId(read.right.id) : '';
};
