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
import type { Registry } from '@lessl/level';
import { LOCAL_HOST, type Engine } from './engine.js';
import { fromDocker, statusOf } from './errors.js';
import { removeStale, staleOf } from './freshness.js';
import type { ImageDriver } from './images.js';
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

const split = (ref: string): { repo: string; tag: string } => {
  const i = ref.lastIndexOf(':');
  return i > ref.lastIndexOf('/') ? { repo: ref.slice(0, i), tag: ref.slice(i + 1) } : { repo: ref, tag: 'latest' };
};

const principalOf = (ctx?: CallContext): string => ctx?.principal ?? 'anonymous';

/** refresh and preload over one engine. */
export const freshness = (
  engine: Engine,
  registry: Registry,
  driver: ImageDriver,
  images: ElementStore,
  authorize: Authorizer = allowAll,
): {
  refresh(id: IdLike, ctx?: CallContext): TaskEither<AnyError, RefreshReport>;
  preload(requests: readonly PreloadRequest[], opts?: PreloadOptions, ctx?: CallContext): TaskEither<AnyError, PreloadResult[]>;
} => {
  const d = engine.docker;
  /** Refreshes of one element run one after the other. */
  const queues = new Map<string, Promise<unknown>>();
  const serial = <A>(key: string, f: () => Promise<A>): Promise<A> => {
    const p = (queues.get(key) ?? Promise.resolve()).then(f, f);
    const tail = p.catch(() => undefined);
    queues.set(key, tail);
    void tail.then(() => queues.get(key) === tail && queues.delete(key));
    return p;
  };

  /** Removes a temporary tag (the image goes with it when nothing else tags it). */
  const untag = (ref: string): Promise<void> =>
    d
      .getImage(ref)
      .remove({ noprune: false })
      .then(
        () => undefined,
        () => undefined,
      );

  /** Records which stale images are still kept (no event: the content did not change). */
  const recordStale = async (key: string, before: readonly string[], kept: readonly string[]): Promise<void> => {
    if (kept.length === before.length) return;
    await registry.locks
      .with([key], async () => {
        const cur = registry.get(key);
        if (cur === undefined) return;
        const still = staleOf(cur).filter((x) => kept.includes(x) || !before.includes(x));
        const { stale: _s, ...attributes } = cur.attributes;
        await registry.commit({
          put: [{ ...cur, attributes: still.length === 0 ? attributes : { ...attributes, stale: still } }],
        });
      })
      .catch(() => undefined);
  };

  /** Fetches `el`'s source again and switches to it if it changed (always, with `force`). */
  const refetch = async (
    el: Element,
    ctx: CallContext | undefined,
    force: boolean,
  ): Promise<E.Either<AnyError, RefreshReport>> => {
    const key = el.id.key;
    const source = el.attributes.source;
    if (source === undefined)
      return E.left(
        unsupported(
          key,
          'refresh of an image without a source it can fetch again',
          'it was made from data (an archive upload or a root filesystem stream) or from a parent: create it again instead',
        ),
      );
    const parsed = parseSource(key, source);
    if (E.isLeft(parsed)) return parsed;
    const signal = ctx?.signal;
    const stopped = (): boolean => signal?.aborted === true;
    if (stopped()) return E.left(aborted(key, signal?.reason));
    const ref = imageRef(engine.instance, el.id);
    const tmp = `${ref}-r${randomBytes(3).toString('hex')}`;
    const made = await driver
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
      .catch((err: unknown) => E.left<AnyError>(err instanceof DataError ? err.error : runtimeError(key, 'refresh failed', err)));
    if (E.isLeft(made)) return made;
    const fresh = made.right.attributes;
    const newId = String(fresh.imageId);
    const oldId = String(el.attributes.imageId ?? '');
    const sameDigest = fresh.sourceDigest !== undefined && fresh.sourceDigest === el.attributes.sourceDigest;
    if (!force && (newId === oldId || sameDigest)) {
      await untag(tmp);
      return E.right({ id: key, changed: false, imageId: oldId, revision: el.revision });
    }
    if (stopped()) {
      await untag(tmp);
      return E.left(aborted(key, signal?.reason));
    }
    const { repo, tag } = split(ref);
    const switched = await registry.locks.with([key], async (): Promise<E.Either<AnyError, Element>> => {
      const cur = registry.get(key);
      if (cur === undefined) {
        await untag(tmp);
        return E.left(notFound(key));
      }
      const previous = String(cur.attributes.imageId ?? '');
      try {
        await d.getImage(newId).tag({ repo, tag });
      } catch (err) {
        await untag(tmp);
        return E.left(fromDocker(key, err));
      }
      const stale = [...new Set([...staleOf(cur), previous])].filter((x) => x !== '' && x !== newId);
      const { stale: _s, ...attributes } = cur.attributes;
      const next: Element = {
        ...cur,
        revision: cur.revision + 1,
        modified: new Date().toISOString(),
        attributes: { ...attributes, ...fresh, ref, ...(stale.length === 0 ? {} : { stale }) },
      };
      try {
        await registry.commit({
          put: [next],
          events: [
            {
              type: 'modified',
              id: key,
              revision: next.revision,
              detail: { refreshed: true, imageId: newId, previousImageId: previous },
            },
          ],
        });
      } catch (err) {
        // the reference goes back to the old content; the new image goes with its temporary tag
        if (previous !== '')
          await d
            .getImage(previous)
            .tag({ repo, tag })
            .catch(() => undefined);
        await untag(tmp);
        return E.left(runtimeError(key, 'could not persist the refresh', err));
      }
      await untag(tmp);
      return E.right(next);
    });
    if (E.isLeft(switched)) return switched;
    const next = switched.right;
    // warm containers of the old content go; the pool now starts containers of the new one
    if (oldId !== '') await engine.pool?.repoint(oldId, newId);
    const stale = staleOf(next);
    await recordStale(key, stale, await removeStale(engine, stale, false));
    return E.right({
      id: key,
      changed: true,
      imageId: newId,
      ...(oldId === '' ? {} : { previousImageId: oldId }),
      revision: next.revision,
    });
  };

  /** The element `id` names, if the caller may update it. */
  const target = (id: IdLike, ctx?: CallContext): E.Either<AnyError, Element> => {
    const p = toId(id);
    if (E.isLeft(p)) return E.left(invalidEntry(`malformed image ID: ${p.left.message}`, '', ['id']));
    if (p.right.kind !== 'image') return E.left(invalidEntry(`${p.right.key} is not an image`, p.right.key, ['id']));
    const el = registry.get(p.right.key);
    if (!authorize(principalOf(ctx), 'update', p.right.key, el))
      return E.left(permissionDenied(p.right.key, principalOf(ctx), 'update'));
    return el === undefined ? E.left(notFound(p.right.key)) : E.right(el);
  };

  const refresh =
    (id: IdLike, ctx?: CallContext): TaskEither<AnyError, RefreshReport> =>
    async () => {
      const el = target(id, ctx);
      if (E.isLeft(el)) return el;
      return serial(el.right.id.key, async () => {
        const cur = registry.get(el.right.id.key);
        return cur === undefined ? E.left(notFound(el.right.id.key)) : refetch(cur, ctx, false);
      });
    };

  /** Whether an element's Docker image is on the engine. */
  const present = async (el: Element): Promise<boolean> =>
    d
      .getImage(String(el.attributes.imageId ?? ''))
      .inspect()
      .then(
        () => true,
        (err: unknown) => statusOf(err) !== 404, // an engine that does not answer: nothing to fetch from here
      );

  const preloadOne = async (r: PreloadRequest, host: string, ctx?: CallContext): Promise<PreloadResult> => {
    const req = typeof r === 'object' && r !== null && 'id' in r ? r : { id: r as IdLike };
    const p = toId(req.id);
    const shown = E.isRight(p) ? p.right.key : String(req.id);
    const failed = (error: AnyError): PreloadResult => ({ id: shown, host, done: 'failed', error });
    if (E.isLeft(p)) return failed(invalidEntry(`malformed image ID: ${p.left.message}`, '', ['id']));
    const el = registry.get(p.right.key);
    if (el === undefined) {
      if (req.source === undefined) return failed(notFound(p.right.key));
      const made = await images.create(
        { id: p.right.key, options: { source: req.source }, ...(req.ro === undefined ? {} : { ro: req.ro }) },
        ctx,
      )();
      return E.isLeft(made)
        ? failed(made.left)
        : { id: shown, host, done: 'created', imageId: String(made.right.attributes.imageId) };
    }
    const t = target(p.right.key, ctx);
    if (E.isLeft(t)) return failed(t.left);
    if (await present(el)) return { id: shown, host, done: 'present', imageId: String(el.attributes.imageId) };
    const got = await serial(el.id.key, () => refetch(registry.get(el.id.key) ?? el, ctx, true));
    return E.isLeft(got) ? failed(got.left) : { id: shown, host, done: 'fetched', imageId: got.right.imageId };
  };

  const preload =
    (requests: readonly PreloadRequest[], opts: PreloadOptions = {}, ctx?: CallContext): TaskEither<AnyError, PreloadResult[]> =>
    async () => {
      if (!Array.isArray(requests)) return E.left(invalidEntry('preload takes a list of images', '', ['images']));
      if (typeof opts !== 'object' || opts === null)
        return E.left(invalidEntry('preload options must be an object', '', ['options']));
      const hosts = opts.hosts ?? [SINGLE_HOST];
      if (!Array.isArray(hosts)) return E.left(invalidEntry('hosts must be a list of host names', '', ['hosts']));
      for (const [i, h] of hosts.entries())
        if (h !== SINGLE_HOST)
          return E.left(
            invalidEntry(`no host ${String(h)}: this backend has one engine, host ${SINGLE_HOST}`, '', [`hosts[${i}]`]),
          );
      const out: PreloadResult[] = [];
      for (const host of new Set(hosts)) for (const r of requests) out.push(await preloadOne(r, host, ctx));
      return E.right(out);
    };

  return { refresh, preload };
};
