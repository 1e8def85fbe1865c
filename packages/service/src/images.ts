/**
 * Images over REST: `GET /v1/images` (the caller's and the public ones), `POST
 * /v1/images` (a source: a registry reference, an http(s) URL of an archive, a path on the server
 * for admins), `PUT /v1/images/{name}` (an image archive as the body), `GET|DELETE
 * /v1/images/{name}` (hosts: hosts.ts). Creating is asynchronous: 202 and `Location:
 * /v1/images/{name}`, which reports `creating` until the image is `ready` (or `failed`, with the
 * problem); `?wait=N` answers 201 with the image when it is ready within N seconds. Every image is a
 * lessl element of the image store with ro metadata `owner` (none for public images).
 */
import type { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { FastifyInstance, FastifyReply } from 'fastify';
import {
  fromUtf8,
  invalidEntry,
  nameCollision,
  notFound,
  permissionDenied,
  runtimeError,
  unsupported,
  utf8,
  type AnyError,
  type Element,
} from '@lessl/core';
import type { Backend } from '@lessl/level';
import type { EgressGuard } from '@lessl/docker';
import { BoolFromString, describe, IntFromString, refine, str, strict } from './codec.js';
import type { ServiceDb, UserRecord } from './db.js';
import { json, problem, route } from './http.js';
import { imageId, type Policy } from './plan.js';
import { operationsOf } from './operate.js';
import { HttpProblem, problemOf, ProblemC } from './problem.js';
import { visibleTo } from './runner.js';
import { refuseBlocked } from './resources.js';

const NameC = refine(t.string, (s) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(s), 'ImageName', {
  type: 'string',
  pattern: '^[a-z0-9][a-z0-9._-]{0,63}$',
});
const NameParamsC = strict('ImageParams', { name: NameC });
const SourceC = t.union([
  strict('RegistrySource', { type: t.literal('registry'), ref: str(512, 1) }),
  strict(
    'UrlSource',
    { type: t.literal('url'), url: str(2048, 1) },
    { checksum: str(80, 1), format: t.union([t.literal('image'), t.literal('rootfs')]) },
  ),
  strict(
    'PathSource',
    { type: t.literal('path'), path: str(4096, 1) },
    { format: t.union([t.literal('image'), t.literal('rootfs')]) },
  ),
  strict(
    'GitSource',
    {
      type: t.literal('git'),
      repo: describe(str(2048, 1), 'the repository URL (http or https; file:// and paths for admins)'),
    },
    {
      ref: describe(str(256, 1), 'a branch, tag or commit (default HEAD)'),
      dockerfile: describe(str(1024, 1), 'the Dockerfile inside the repository (default Dockerfile)'),
    },
  ),
]);
/** A repository a non-admin may name: http(s) only (file://, paths and ssh reach into the server). */
const publicRepo = (repo: string): boolean => /^https?:\/\//i.test(repo);
/** The body of `POST /v1/images`. */
export const NewImageC = strict(
  'NewImage',
  { name: NameC, source: SourceC },
  { public: describe(t.boolean, 'readable by every user (admins only)') },
);
const RefreshQueryC = strict(
  'RefreshQuery',
  {},
  { wait: describe(IntFromString(0, 600), 'seconds to wait for the refresh: 200 with the image when it is done') },
);
const CreateQueryC = strict(
  'ImageQuery',
  {},
  {
    wait: describe(IntFromString(0, 600), 'seconds to wait for the image: 201 with it when it is ready'),
    public: describe(BoolFromString, 'readable by every user (admins only)'),
  },
);
const Nullable = <C extends t.Mixed>(c: C) => t.union([c, t.null]);
/** An image as the API reports it. */
export const ImageViewC = strict('Image', {
  name: t.string,
  id: t.string,
  owner: Nullable(t.string),
  public: t.boolean,
  state: t.keyof({ creating: null, ready: null, failed: null }),
  size: Nullable(t.number),
  created: Nullable(t.string),
  lastUsed: Nullable(t.string),
  error: Nullable(ProblemC),
  refresh: describe(
    Nullable(
      strict('ImageRefresh', {
        state: t.keyof({ running: null, done: null, failed: null }),
        changed: describe(Nullable(t.boolean), 'whether the source gave new content (the image moved to it)'),
        started: t.string,
        ended: Nullable(t.string),
        error: Nullable(ProblemC),
      }),
    ),
    'the last refresh (POST /v1/images/{name}/refresh) since the service started',
  ),
});
/** The state of an image's last refresh. */
type RefreshView = NonNullable<t.TypeOf<typeof ImageViewC>['refresh']>;
/** An image view. */
export type ImageView = t.TypeOf<typeof ImageViewC>;
const ImageListC = strict('ImageList', { items: t.array(ImageViewC) });
interface Pending {
  readonly owner: string | null;
  state: 'creating' | 'failed';
  error: AnyError | null;
  done: Promise<void>;
}

/** The most bytes an uploaded archive may have. */
const MAX_UPLOAD = 8 * 1024 ** 3;

/** What the image routes tell the rest of the service. */
export interface ImageRoutes {
  /** Images by state (creating, ready, failed), for the metrics. */
  counts(): Record<'creating' | 'ready' | 'failed', number>;
}

/** Registers the image and host routes. */
export const registerImageRoutes = (
  app: FastifyInstance,
  db: ServiceDb,
  b: Backend,
  policy: Policy,
  egress: EgressGuard,
): ImageRoutes => {
  const pending = new Map<string, Pending>();
  const refreshes = new Map<string, { view: RefreshView; done: Promise<void> }>();
  const idOf = (name: string): string => imageId(name, policy.imageStore);
  const ownerOf = (el: Element): string | null => fromUtf8(el.ro).owner ?? null;

  const view = (name: string): ImageView | undefined => {
    const el = b.registry.get(idOf(name));
    const p = pending.get(name);
    if (el === undefined) {
      if (p === undefined) return undefined;
      const error = p.error === null ? null : problemOf(p.error);
      return {
        name,
        id: idOf(name),
        owner: p.owner,
        public: p.owner === null,
        state: p.state,
        size: null,
        created: null,
        lastUsed: null,
        error,
        refresh: null,
      };
    }
    const a = el.attributes;
    return {
      name,
      id: el.id.key,
      owner: ownerOf(el),
      public: ownerOf(el) === null,
      state: 'ready',
      size: typeof a.size === 'number' ? a.size : null,
      created: el.created,
      lastUsed: typeof a.lastUsed === 'string' ? a.lastUsed : null,
      error: null,
      refresh: refreshes.get(name)?.view ?? null,
    };
  };
  /** The view if the caller may see it, else 404 (no existence leak). */
  const visible = (u: UserRecord, name: string): ImageView => {
    const v = view(name);
    if (v === undefined || !(u.admin || visibleTo(v.owner ?? undefined, u.name)))
      throw new HttpProblem(notFound(`/v1/images/${name}`), 404);
    return v;
  };

  /**
   * Starts a create in the background and answers 202 (or 201 once ready within `wait`). An upload
   * answers once its body is `received` (or the create ended without it): answering earlier would
   * make Node discard the rest of the body, and a client that resets its connection would go unnoticed.
   */
  const start = async (
    reply: FastifyReply,
    u: UserRecord,
    name: string,
    isPublic: boolean,
    wait: number | undefined,
    make: (ro: Record<string, Uint8Array>) => Promise<E.Either<AnyError, Element>>,
    received?: Promise<void>,
  ): Promise<unknown> => {
    if (isPublic && !u.admin) throw new HttpProblem(permissionDenied(`/v1/images/${name}`, u.name, 'create'), 403);
    if (b.registry.get(idOf(name)) !== undefined || pending.get(name)?.state === 'creating')
      throw new HttpProblem(nameCollision(idOf(name)), 409);
    const owner = isPublic ? null : u.name;
    const p: Pending = { owner, state: 'creating', error: null, done: Promise.resolve() };
    pending.set(name, p);
    const fail = (error: AnyError): void => {
      p.state = 'failed';
      p.error = error;
    };
    const done = make(owner === null ? {} : utf8({ owner })).then(
      (r) => {
        if (E.isRight(r)) pending.delete(name);
        else fail(r.left);
      },
      (err: unknown) => fail(runtimeError(idOf(name), 'the image could not be created', err)),
    );
    p.done = done;
    if (received !== undefined) await Promise.race([received, done]);
    if (wait !== undefined) await Promise.race([p.done, new Promise((r) => setTimeout(r, wait * 1000).unref())]);
    const v = view(name) as ImageView;
    reply.header('location', `/v1/images/${name}`);
    if (v.state === 'ready') return reply.code(201).send(v);
    return reply.code(202).send(v);
  };

  // archive uploads arrive as a stream, not parsed
  app.addContentTypeParser(['application/x-tar', 'application/octet-stream'], (_req, payload, done) => done(null, payload));

  route(app, db, {
    method: 'GET',
    url: '/v1/images',
    summary: 'The images the caller may use: its own and the public ones (admins: all)',
    tags: ['images'],
    auth: 'user',
    responses: { 200: { description: 'the images', ...json(ImageListC) } },
    handler: async ({ user }) => {
      const names = new Set([...b.registry.scan(`image://${policy.imageStore}/`).map((e) => e.id.name), ...pending.keys()]);
      const items = [...names]
        .sort()
        .map((n) => view(n))
        .filter((v): v is ImageView => v !== undefined && (user.admin || visibleTo(v.owner ?? undefined, user.name)));
      return { items };
    },
  });

  route(app, db, {
    method: 'POST',
    url: '/v1/images',
    summary: 'Create an image from a source (asynchronous: 202 and Location: /v1/images/{name}; ?wait=N: 201 when ready)',
    tags: ['images'],
    auth: 'user',
    body: NewImageC,
    query: CreateQueryC,
    responses: {
      201: { description: 'ready within ?wait', ...json(ImageViewC) },
      202: { description: 'creating: follow Location', ...json(ImageViewC), headers: { location: '/v1/images/{name}' } },
      403: problem('a path source, a git repository that is not http(s), or a public image, by a non-admin'),
      409: problem('an image of that name exists (NameCollision)'),
    },
    handler: async ({ reply, user, body, query }) => {
      if ((body.source.type === 'path' || (body.source.type === 'git' && !publicRepo(body.source.repo))) && !user.admin)
        throw new HttpProblem(permissionDenied('/v1/images', user.name, 'create'), 403);
      const s = body.source;
      await refuseBlocked(
        egress,
        s.type === 'url' ? s.url : s.type === 'git' ? s.repo : undefined,
        `source.${s.type === 'url' ? 'url' : 'repo'}`,
      );
      const options = { source: body.source };
      return start(reply, user, body.name, body.public === true, query?.wait, (ro) =>
        b.stores.image.create({ id: idOf(body.name), ro, options })(),
      );
    },
  });

  route(app, db, {
    method: 'PUT',
    url: '/v1/images/:name',
    summary: 'Create an image from an image archive (`docker save`) as the body (application/x-tar); asynchronous like POST',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    query: CreateQueryC,
    responses: {
      201: { description: 'ready within ?wait', ...json(ImageViewC) },
      202: { description: 'creating: follow Location', ...json(ImageViewC), headers: { location: '/v1/images/{name}' } },
      409: problem('an image of that name exists (NameCollision)'),
      415: problem('the body is not application/x-tar or application/octet-stream'),
    },
    handler: async ({ req, reply, user, params, query }) => {
      const body = req.body as Readable | undefined;
      if (body === undefined || typeof (body as { pipe?: unknown }).pipe !== 'function')
        throw new HttpProblem(invalidEntry('send the archive as application/x-tar', '', ['body']), 415);
      let bytes = 0;
      let gotAll = (): void => undefined;
      const received = new Promise<void>((r) => (gotAll = r));
      const limited = async function* (): AsyncIterable<Uint8Array> {
        try {
          for await (const c of body as AsyncIterable<Buffer>) {
            bytes += c.length;
            if (bytes > MAX_UPLOAD) throw new Error(`the archive is larger than ${MAX_UPLOAD} bytes`);
            yield c;
          }
        } finally {
          gotAll(); // read to its end, cut by the client, or given up by the create
        }
      };
      return start(
        reply,
        user,
        params.name,
        query?.public === true,
        query?.wait,
        (ro) => b.stores.image.create({ id: idOf(params.name), ro, data: limited(), options: { source: { type: 'tarball' } } })(),
        received,
      );
    },
  });

  route(app, db, {
    method: 'GET',
    url: '/v1/images/:name',
    summary: 'An image: creating, ready or failed (with the problem)',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    responses: { 200: { description: 'the image', ...json(ImageViewC) }, 404: problem('no such image (or not the caller’s)') },
    handler: async ({ user, params }) => visible(user, params.name),
  });

  route(app, db, {
    method: 'DELETE',
    url: '/v1/images/:name',
    summary: 'Remove an image (its owner or an admin); idempotent',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    responses: { 204: { description: 'gone' }, 404: problem('no such image'), 409: problem('in use (InUse)') },
    handler: async ({ reply, user, params }) => {
      const v = view(params.name);
      if (v === undefined) return reply.code(204).send();
      if (!(user.admin || v.owner === user.name)) throw new HttpProblem(notFound(`/v1/images/${params.name}`), 404);
      if (v.state !== 'ready') {
        pending.delete(params.name);
        return reply.code(204).send();
      }
      const r = await b.stores.image.delete(idOf(params.name))();
      if (E.isLeft(r) && r.left._tag !== 'NotFound') throw new HttpProblem(r.left);
      return reply.code(204).send();
    },
  });

  route(app, db, {
    method: 'POST',
    url: '/v1/images/:name/refresh',
    summary:
      'Fetch the image’s source again (its owner or an admin): new content replaces it for new tasks, running tasks keep theirs. Asynchronous: 202 and Location; ?wait=N: 200 once done',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    query: RefreshQueryC,
    responses: {
      200: { description: 'refreshed within ?wait (see refresh.changed)', ...json(ImageViewC) },
      202: { description: 'refreshing: follow Location', ...json(ImageViewC), headers: { location: '/v1/images/{name}' } },
      403: problem('a public image, by a non-admin'),
      404: problem('no such image ready (or not the caller’s)'),
      409: problem('the image has no source to fetch again (an uploaded archive): Unsupported'),
      501: problem('the backend cannot refresh images'),
    },
    handler: async ({ reply, user, params, query }) => {
      const name = params.name;
      const v = visible(user, name);
      if (v.state !== 'ready') throw new HttpProblem(notFound(`/v1/images/${name}`), 404);
      if (!(user.admin || v.owner === user.name))
        throw new HttpProblem(permissionDenied(`/v1/images/${name}`, user.name, 'update'), 403);
      const el = b.registry.get(idOf(name));
      if (el?.attributes.source === undefined)
        throw new HttpProblem(
          unsupported(idOf(name), 'refresh of an image without a source', 'it was uploaded as an archive: upload it again'),
          409,
        );
      const refresh = operationsOf(b).refresh;
      if (refresh === undefined)
        throw new HttpProblem(unsupported(idOf(name), 'refreshing images', 'the backend cannot fetch sources again'));
      let cur = refreshes.get(name);
      if (cur?.view.state !== 'running') {
        const r: { view: RefreshView; done: Promise<void> } = {
          view: { state: 'running', changed: null, started: new Date().toISOString(), ended: null, error: null },
          done: Promise.resolve(),
        };
        const end = (patch: Partial<RefreshView>): void => {
          r.view = { ...r.view, ...patch, ended: new Date().toISOString() };
        };
        r.done = refresh(idOf(name))().then(
          (x) =>
            E.isRight(x) ? end({ state: 'done', changed: x.right.changed }) : end({ state: 'failed', error: problemOf(x.left) }),
          (err: unknown) => end({ state: 'failed', error: problemOf(runtimeError(idOf(name), 'the refresh failed', err)) }),
        );
        refreshes.set(name, r);
        cur = r;
      }
      const wait = query?.wait;
      if (wait !== undefined) await Promise.race([cur.done, new Promise((res) => setTimeout(res, wait * 1000).unref())]);
      reply.header('location', `/v1/images/${name}`);
      const now = visible(user, name);
      return reply.code(now.refresh?.state === 'running' ? 202 : 200).send(now);
    },
  });

  return {
    counts: () => {
      const n = { creating: 0, ready: 0, failed: 0 };
      n.ready = b.registry.scan(`image://${policy.imageStore}/`).length;
      for (const p of pending.values()) n[p.state]++;
      return n;
    },
  };
};
