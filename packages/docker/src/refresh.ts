/**
 * Image freshness, part two (docs/pool.md): `refresh` fetches an image element's source again and
 * moves the element to the new content atomically; `preload` makes images present on the engine
 * ahead of need.
 *
 * Refresh: the source an element recorded at create (`attributes.source`, without credentials) is
 * fetched again under a temporary reference, with progress and cancellation. Unchanged content
 * (the same Docker image, or the same bytes or git commit: `attributes.sourceDigest`) is answered
 * as such and leaves nothing. Changed content is switched in one step under the element's lock:
 * the element's reference is tagged onto the new image and the record (new `imageId`, revision +1)
 * is committed with its `modified` event. Containers made from the old image keep it (running
 * tasks keep their content); the old image is removed at once when nothing uses it, else it is
 * listed in `attributes.stale` and removed by `purge` or when the element is deleted. The warm
 * pool's containers of the old content are removed and its profiles move to the new one.
 */
import { randomBytes } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  allowAll,
  DataError,
  invalidEntry,
  notFound,
  permissionDenied,
  runtimeError,
  toId,
  unsupported,
  type AnyError,
  type Authorizer,
  type CallContext,
  type Element,
  type ElementStore,
  type IdLike,
  type Metadata,
} from '@lessl/core';
import { principalOf, recordDoor, type RecordDoor, type RegistryPort } from '@lessl/kit';
import { imageAttributes, imageIdOf } from './attributes.js';
import { LOCAL_HOST, type Host } from './host.js';
import { fromDocker, statusOf } from './errors.js';
import { keepStale, removeStale, staleOf } from './freshness.js';
import { tagAs } from './image/engine-io.js';
import type { ImageCreated, ImageDriver, MadeImage } from './images.js';
import { imageRef } from './names.js';
import { parseSource, type ImageSource } from './sources.js';

/** What `refresh` answers. */
export interface RefreshReport {
  readonly id: string;
  /** True when the source gave other content: the element moved to it (one `modified` event). */
  readonly changed: boolean;
  /** The element's Docker image now. */
  readonly imageId: string;
  /** The Docker image it had, when it changed (kept while containers use it). */
  readonly previousImageId?: string;
  /** The element's revision now. */
  readonly revision: number;
}

/** An image `preload` makes present: an element ID, or an ID and the source to create it from if it is missing. */
export type PreloadRequest =
  | IdLike
  | {
      readonly id: IdLike;
      /** How to create the element when it does not exist (as `options.source` of a create). */
      readonly source?: ImageSource;
      /** ro metadata of an element created here. */
      readonly ro?: Metadata;
    };

/** Options of `preload`. */
export interface PreloadOptions {
  /**
   * The hosts to make the images present on (default: every active host). A backend over one
   * engine has one host, `local`; an unknown name is `InvalidEntry`.
   */
  readonly hosts?: readonly string[];
}

/** What `preload` did for one image. */
export type PreloadResult =
  | {
      readonly id: string;
      readonly host: string;
      /**
       * `present`: nothing to do; `created`: made from its source; `fetched`: its Docker image was
       * gone and was fetched again; `copied`: copied to this host from another (several hosts).
       */
      readonly done: 'present' | 'created' | 'fetched' | 'copied';
      readonly imageId: string;
    }
  | { readonly id: string; readonly host: string; readonly done: 'failed'; readonly error: AnyError };

/** The name of the one host of a backend over a single engine. */
export const SINGLE_HOST = LOCAL_HOST;

/** What refresh and preload work with over one engine. */
interface Fresh {
  readonly engine: Host;
  /** Where records change: stale bookkeeping (`amend`), the switch to new content (`hold`). */
  readonly door: RecordDoor;
  readonly driver: ImageDriver;
  readonly images: ElementStore;
  readonly authorize: Authorizer;
  /** Runs refreshes of one element one after the other. */
  readonly serial: <A>(key: string, f: () => Promise<A>) => Promise<A>;
}

/** A queue per key: calls with one key run one after the other. */
const serialQueues = (): Fresh['serial'] => {
  const queues = new Map<string, Promise<unknown>>();
  return <A>(key: string, f: () => Promise<A>): Promise<A> => {
    const p = (queues.get(key) ?? Promise.resolve()).then(f, f);
    const tail = p.catch(() => undefined);
    queues.set(key, tail);
    void tail.then(() => queues.get(key) === tail && queues.delete(key));
    return p;
  };
};

/** Removes a temporary tag (the image goes with it when nothing else tags it). */
const untag = (f: Fresh, ref: string): Promise<void> =>
  f.engine.clients.images.remove(ref, { noprune: false }).then(
    () => undefined,
    () => undefined,
  );

/** Records which stale images are still kept (no event: the content did not change). */
const recordStale = async (f: Fresh, key: string, before: readonly string[], kept: readonly string[]): Promise<void> => {
  if (kept.length === before.length) return;
  await f.door.amend(key, keepStale(before, kept)).catch(() => undefined);
};

/** The source `el` recorded, decoded; an element made from data or a parent has none to fetch. */
const recordedSource = (el: Element): E.Either<AnyError, ImageSource> => {
  const key = el.id.key;
  const source = parseSource(key, imageAttributes(el).source);
  if (E.isLeft(source)) return source;
  if (source.right !== undefined) return E.right(source.right);
  return E.left(
    unsupported(
      key,
      'refresh of an image without a source it can fetch again',
      'it was made from data (an archive upload or a root filesystem stream) or from a parent: create it again instead',
    ),
  );
};

/** Phase 1: fetches `source` again as the image `tmp` (a throw is the refresh's failure). */
const fetchAgain = (
  f: Fresh,
  el: Element,
  source: ImageSource,
  tmp: string,
  ctx: CallContext | undefined,
): Promise<E.Either<AnyError, ImageCreated>> => {
  const signal = ctx?.signal;
  return f.driver
    .fetchAs(
      {
        id: el.id,
        store: { kind: 'image', name: el.id.store },
        ro: el.ro,
        rw: el.rw,
        options: { source },
        ...(signal === undefined ? {} : { signal }),
        ...(typeof ctx?.onProgress === 'function' ? { progress: ctx.onProgress } : {}),
      },
      tmp,
    )
    .catch((err: unknown) =>
      E.left<AnyError>(err instanceof DataError ? err.error : runtimeError(el.id.key, 'refresh failed', err)),
    );
};

/**
 * Phase 2, under the element's lock: the element's reference is tagged onto the new image and
 * the record (new `imageId`, revision + 1) written with its `modified` event. A failed write
 * puts the reference back on the old content; the temporary tag goes either way.
 */
const switchTo = async (
  f: Fresh,
  key: string,
  ref: string,
  tmp: string,
  fresh: MadeImage,
): Promise<E.Either<AnyError, Element>> =>
  (await f.door.hold(key, async (cur, write): Promise<E.Either<AnyError, Element>> => {
    if (cur === undefined) {
      await untag(f, tmp);
      return E.left(notFound(key));
    }
    const previous = imageIdOf(cur);
    try {
      await tagAs(f.engine, fresh.imageId, ref);
    } catch (err) {
      await untag(f, tmp);
      return E.left(fromDocker(key, err));
    }
    const stale = [...new Set([...staleOf(cur), previous])].filter((x) => x !== '' && x !== fresh.imageId);
    const detail = { refreshed: true, imageId: fresh.imageId, previousImageId: previous };
    const { stale: _s, ...attributes } = cur.attributes;
    const next = await write(
      { ...attributes, ...fresh, ref, ...(stale.length === 0 ? {} : { stale }) },
      { type: 'modified', detail },
    ).then(
      (el): E.Either<AnyError, Element> => E.right(el),
      (err: unknown): E.Either<AnyError, Element> => E.left(runtimeError(key, 'could not persist the refresh', err)),
    );
    // the reference goes back to the old content; the new image goes with its temporary tag
    if (E.isLeft(next) && previous !== '') await tagAs(f.engine, previous, ref).catch(() => undefined);
    await untag(f, tmp);
    return next;
  })) ?? E.left(notFound(key));

/** Fetches `el`'s source again and switches to it if it changed (always, with `force`). */
const refetch = async (
  f: Fresh,
  el: Element,
  ctx: CallContext | undefined,
  force: boolean,
): Promise<E.Either<AnyError, RefreshReport>> => {
  const key = el.id.key;
  const source = recordedSource(el);
  if (E.isLeft(source)) return source;
  const signal = ctx?.signal;
  const stopped = (): boolean => signal?.aborted === true;
  if (stopped()) return E.left(aborted(key, signal?.reason));
  const ref = imageRef(f.engine.instance, el.id);
  const tmp = `${ref}-r${randomBytes(3).toString('hex')}`;
  const made = await fetchAgain(f, el, source.right, tmp, ctx);
  if (E.isLeft(made)) return made;
  const fresh = made.right.attributes;
  const oldId = imageIdOf(el);
  const sameDigest = fresh.sourceDigest !== undefined && fresh.sourceDigest === imageAttributes(el).sourceDigest;
  if (!force && (fresh.imageId === oldId || sameDigest)) {
    await untag(f, tmp);
    return E.right({ id: key, changed: false, imageId: oldId, revision: el.revision });
  }
  if (stopped()) {
    await untag(f, tmp);
    return E.left(aborted(key, signal?.reason));
  }
  const switched = await switchTo(f, key, ref, tmp, fresh);
  if (E.isLeft(switched)) return switched;
  // warm containers of the old content go; the pool now starts containers of the new one
  if (oldId !== '') await f.engine.pool?.repoint(oldId, fresh.imageId);
  const stale = staleOf(switched.right);
  await recordStale(f, key, stale, await removeStale(f.engine, stale, false));
  const previous = oldId === '' ? {} : { previousImageId: oldId };
  return E.right({ id: key, changed: true, imageId: fresh.imageId, ...previous, revision: switched.right.revision });
};

/** The element `id` names, if the caller may update it. */
const target = (f: Fresh, id: IdLike, ctx?: CallContext): E.Either<AnyError, Element> => {
  const p = toId(id);
  if (E.isLeft(p)) return E.left(invalidEntry(`malformed image ID: ${p.left.message}`, '', ['id']));
  if (p.right.kind !== 'image') return E.left(invalidEntry(`${p.right.key} is not an image`, p.right.key, ['id']));
  const el = f.door.get(p.right.key);
  if (!f.authorize(principalOf(ctx), 'update', p.right.key, el))
    return E.left(permissionDenied(p.right.key, principalOf(ctx), 'update'));
  return el === undefined ? E.left(notFound(p.right.key)) : E.right(el);
};

/** Whether an element's Docker image is on the engine (an engine that does not answer: nothing to fetch from here). */
const present = async (f: Fresh, el: Element): Promise<boolean> =>
  f.engine.clients.images.inspect(imageIdOf(el)).then(
    () => true,
    (err: unknown) => statusOf(err) !== 404,
  );

/** Makes one image present on the one host: created from its source when missing, fetched again when its Docker image is gone. */
const preloadOne = async (f: Fresh, r: PreloadRequest, host: string, ctx?: CallContext): Promise<PreloadResult> => {
  const req = typeof r === 'object' && r !== null && 'id' in r ? r : { id: r, source: undefined, ro: undefined };
  const p = toId(req.id);
  const shown = E.isRight(p) ? p.right.key : String(req.id);
  const failed = (error: AnyError): PreloadResult => ({ id: shown, host, done: 'failed', error });
  if (E.isLeft(p)) return failed(invalidEntry(`malformed image ID: ${p.left.message}`, '', ['id']));
  const el = f.door.get(p.right.key);
  if (el === undefined) {
    if (req.source === undefined) return failed(notFound(p.right.key));
    const made = await f.images.create(
      { id: p.right.key, options: { source: req.source }, ...(req.ro === undefined ? {} : { ro: req.ro }) },
      ctx,
    )();
    return E.isLeft(made) ? failed(made.left) : { id: shown, host, done: 'created', imageId: imageIdOf(made.right) };
  }
  const t = target(f, p.right.key, ctx);
  if (E.isLeft(t)) return failed(t.left);
  if (await present(f, el)) return { id: shown, host, done: 'present', imageId: imageIdOf(el) };
  const got = await f.serial(el.id.key, () => refetch(f, f.door.get(el.id.key) ?? el, ctx, true));
  return E.isLeft(got) ? failed(got.left) : { id: shown, host, done: 'fetched', imageId: got.right.imageId };
};

/** The hosts a preload names, checked: a backend over one engine has one, `local`. */
const preloadHosts = (opts: PreloadOptions): E.Either<AnyError, readonly string[]> => {
  const hosts = opts.hosts ?? [SINGLE_HOST];
  if (!Array.isArray(hosts)) return E.left(invalidEntry('hosts must be a list of host names', '', ['hosts']));
  for (const [i, h] of hosts.entries())
    if (h !== SINGLE_HOST)
      return E.left(invalidEntry(`no host ${String(h)}: this backend has one engine, host ${SINGLE_HOST}`, '', [`hosts[${i}]`]));
  return E.right(hosts);
};

/** refresh and preload over one engine. */
export const freshness = (
  engine: Host,
  registry: RegistryPort,
  driver: ImageDriver,
  images: ElementStore,
  authorize: Authorizer = allowAll,
): {
  refresh(id: IdLike, ctx?: CallContext): TaskEither<AnyError, RefreshReport>;
  preload(requests: readonly PreloadRequest[], opts?: PreloadOptions, ctx?: CallContext): TaskEither<AnyError, PreloadResult[]>;
} => {
  const f: Fresh = {
    engine,
    door: recordDoor(registry),
    driver,
    images,
    authorize,
    serial: serialQueues(),
  };
  const refresh =
    (id: IdLike, ctx?: CallContext): TaskEither<AnyError, RefreshReport> =>
    async () => {
      const el = target(f, id, ctx);
      if (E.isLeft(el)) return el;
      return f.serial(el.right.id.key, async () => {
        const cur = f.door.get(el.right.id.key);
        return cur === undefined ? E.left(notFound(el.right.id.key)) : refetch(f, cur, ctx, false);
      });
    };
  const preload =
    (requests: readonly PreloadRequest[], opts: PreloadOptions = {}, ctx?: CallContext): TaskEither<AnyError, PreloadResult[]> =>
    async () => {
      if (!Array.isArray(requests)) return E.left(invalidEntry('preload takes a list of images', '', ['images']));
      if (typeof opts !== 'object' || opts === null)
        return E.left(invalidEntry('preload options must be an object', '', ['options']));
      const hosts = preloadHosts(opts);
      if (E.isLeft(hosts)) return hosts;
      const out: PreloadResult[] = [];
      for (const host of new Set(hosts.right)) for (const r of requests) out.push(await preloadOne(f, r, host, ctx));
      return E.right(out);
    };
  return { refresh, preload };
};
