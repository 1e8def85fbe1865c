/**
 * Images over REST: `GET /v1/images` (the caller's and the public ones), `POST
 * /v1/images` (a source: a registry reference, an http(s) URL of an archive, a path on the server
 * for admins), `PUT /v1/images/{name}` (an image archive as the body), `GET|DELETE
 * /v1/images/{name}` (hosts: hosts.ts). Creating is asynchronous: 202 and `Location:
 * /v1/images/{name}`, which reports `creating` until the image is `ready` (or `failed`, with the
 * problem); `?wait=N` answers 201 with the image when it is ready within N seconds. Every image is a
 * lessl element of the image store with ro metadata `owner` (none for public images).
 */
import { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
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
import type { Backend } from '@lessl/kit';
import type { EgressGuard } from '@lessl/docker';
import { BoolFromString, describe, IntFromString, str, strict } from './codec.js';
import type { UserRecord } from './db.js';
import { json, problem, route } from './http.js';
import { imageId, type Policy } from './plan.js';
import type { QuotaDesk } from './quotas.js';
import { operationsOf } from './operate.js';
import { HttpProblem, problemOf, ProblemC } from './problem.js';
import { listElements, onBehalfOf, readElement } from './elements.js';
import { refuseBlocked } from './resources.js';
import { ImageNameC, ImageSourceC } from './sources.js';

const NameParamsC = strict('ImageParams', { name: ImageNameC });
/** A repository a non-admin may name: http(s) only (file://, paths and ssh reach into the server). */
const publicRepo = (repo: string): boolean => /^https?:\/\//i.test(repo);
/** The body of `POST /v1/images`. */
export const NewImageC = strict(
  'NewImage',
  { name: ImageNameC, source: ImageSourceC },
  {
    public: describe(t.boolean, 'readable by every user (admins only)'),
    description: describe(str(1024), 'free text kept with the image (lessl up marks the images it made here)'),
  },
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
  description: describe(Nullable(t.string), 'the text given when it was created'),
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
  readonly description: string | null;
  state: 'creating' | 'failed';
  error: AnyError | null;
  /** The status of `error` when HTTP says more than its tag (429: a quota). */
  status?: number;
  done: Promise<void>;
}
interface Refresh {
  view: RefreshView;
  done: Promise<void>;
}

/** The most bytes an uploaded archive may have. */
const MAX_UPLOAD = 8 * 1024 ** 3;

/** What the image routes tell the rest of the service. */
export interface ImageRoutes {
  /** Images by state (creating, ready, failed), for the metrics. */
  counts(): Promise<Record<'creating' | 'ready' | 'failed', number>>;
}

/** An image a caller may see: its view and, once it is ready, its element. */
interface Seen {
  readonly view: ImageView;
  readonly el: Element | undefined;
}

/** The view of a ready image: its element. */
const readyView = (name: string, el: Element, refresh: RefreshView | null): ImageView => {
  const a = el.attributes;
  const ro = fromUtf8(el.ro);
  const owner = ro.owner ?? null;
  return {
    name,
    id: el.id.key,
    owner,
    public: owner === null,
    state: 'ready',
    size: typeof a.size === 'number' ? a.size : null,
    created: el.created,
    lastUsed: typeof a.lastUsed === 'string' ? a.lastUsed : null,
    error: null,
    description: ro.description ?? null,
    refresh,
  };
};

/** The view of an image being created (or whose create failed). */
const pendingView = (name: string, id: string, p: Pending): ImageView => ({
  name,
  id,
  owner: p.owner,
  public: p.owner === null,
  state: p.state,
  size: null,
  created: null,
  lastUsed: null,
  error: p.error === null ? null : problemOf(p.error, p.status),
  description: p.description,
  refresh: null,
});

/** Resolves after `seconds` (a timer that does not keep the process alive). */
const delay = (seconds: number): Promise<void> => new Promise((r) => setTimeout(r, seconds * 1000).unref());

/**
 * The service's images: elements of the image store, read through the store on behalf of the
 * caller (the authorizer decides what they see), plus the creates and refreshes under way, which
 * are not elements yet and are the service's own bookkeeping.
 */
class ImageBook implements ImageRoutes {
  private readonly pending = new Map<string, Pending>();
  private readonly refreshes = new Map<string, Refresh>();
  constructor(
    private readonly b: Backend,
    private readonly store: string,
    private readonly quotas?: QuotaDesk,
  ) {}

  /** The element ID of image `name`. */
  idOf(name: string): string {
    return imageId(name, this.store);
  }

  /** A create under way (or failed) the caller may see (`read`: theirs or public) or remove (`delete`: theirs); admins all. */
  private pendingFor(u: UserRecord, name: string, op: 'read' | 'delete'): Pending | undefined {
    const p = this.pending.get(name);
    if (p === undefined || u.admin || p.owner === u.name) return p;
    return op === 'read' && p.owner === null ? p : undefined;
  }

  /** The image as the caller may see it, else 404 (no existence leak). */
  async visible(u: UserRecord, name: string): Promise<Seen> {
    const el = await readElement(this.b, 'image', this.idOf(name), onBehalfOf(u));
    if (el !== undefined) return { view: readyView(name, el, this.refreshes.get(name)?.view ?? null), el };
    const p = this.pendingFor(u, name, 'read');
    if (p === undefined) throw new HttpProblem(notFound(`/v1/images/${name}`), 404);
    return { view: pendingView(name, this.idOf(name), p), el: undefined };
  }

  /** The images the caller may see, by name. */
  async list(u: UserRecord): Promise<ImageView[]> {
    const els = await listElements(this.b, 'image', { store: this.store }, onBehalfOf(u));
    const byName = new Map(els.map((e) => [e.id.name, e]));
    const names = [...new Set([...byName.keys(), ...this.pending.keys()])].sort();
    return names.flatMap((n) => {
      const el = byName.get(n);
      if (el !== undefined) return [readyView(n, el, this.refreshes.get(n)?.view ?? null)];
      const p = this.pendingFor(u, n, 'read');
      return p === undefined ? [] : [pendingView(n, this.idOf(n), p)];
    });
  }

  /**
   * Starts a create in the background and answers 202 (or 201 once ready within `wait`). An upload
   * answers once its body is `received` (or the create ended without it): answering earlier would
   * make Node discard the rest of the body, and a client that resets its connection would go unnoticed.
   */
  async start(reply: FastifyReply, c: CreateCall): Promise<unknown> {
    const { user: u, name } = c;
    const id = this.idOf(name);
    if (c.isPublic && !u.admin) throw new HttpProblem(permissionDenied(`/v1/images/${name}`, u.name, 'create'), 403);
    if ((await readElement(this.b, 'image', id)) !== undefined || this.pending.get(name)?.state === 'creating')
      throw new HttpProblem(nameCollision(id), 409);
    // a private image counts against its owner's imageBytes: none is built once they are at the quota
    const over = c.isPublic ? undefined : await this.quotas?.refusal(u, { imageBytes: 1 });
    if (over !== undefined) throw over;
    const owner = c.isPublic ? null : u.name;
    const description = c.description ?? null;
    const p: Pending = { owner, description, state: 'creating', error: null, done: Promise.resolve() };
    this.pending.set(name, p);
    const fail = (error: AnyError, status?: number): void => {
      p.status = status;
      p.state = 'failed';
      p.error = error;
    };
    const ro = { ...(owner === null ? {} : { owner }), ...(description === null ? {} : { description }) };
    const made = async (el: Element): Promise<void> => {
      // built past the quota: removed again, and the create fails naming it
      const past = owner === null ? undefined : await this.quotas?.afterImage(u, el.id.key);
      if (past === undefined) this.pending.delete(name);
      else fail(past, 429);
    };
    p.done = c
      .make(utf8(ro))
      .then((r) => (E.isRight(r) ? made(r.right) : fail(r.left)))
      .catch((err: unknown) => fail(runtimeError(id, 'the image could not be created', err)));
    if (c.received !== undefined) await Promise.race([c.received, p.done]);
    if (c.wait !== undefined) await Promise.race([p.done, delay(c.wait)]);
    const el = await readElement(this.b, 'image', id);
    const v = el === undefined ? pendingView(name, id, p) : readyView(name, el, this.refreshes.get(name)?.view ?? null);
    reply.header('location', `/v1/images/${name}`);
    return reply.code(v.state === 'ready' ? 201 : 202).send(v);
  }

  /** Removes an image (its owner's or an admin's call: the authorizer decides), or a create under way; idempotent. */
  async remove(u: UserRecord, name: string): Promise<void> {
    const id = this.idOf(name);
    if ((await readElement(this.b, 'image', id)) === undefined) {
      if (!this.pending.has(name)) return;
      if (this.pendingFor(u, name, 'delete') === undefined) throw new HttpProblem(notFound(`/v1/images/${name}`), 404);
      this.pending.delete(name);
      return;
    }
    const r = await this.b.stores.image.delete(id, onBehalfOf(u))();
    if (E.isRight(r) || r.left._tag === 'NotFound') return;
    throw r.left._tag === 'PermissionDenied' ? new HttpProblem(notFound(`/v1/images/${name}`), 404) : new HttpProblem(r.left);
  }

  /** Starts a refresh of a ready image (unless one runs) and answers it, as `refresh` of the backend does it. */
  async refresh(u: UserRecord, name: string, wait: number | undefined): Promise<Seen> {
    const { view, el } = await this.visible(u, name);
    if (el === undefined) throw new HttpProblem(notFound(`/v1/images/${name}`), 404);
    // what a caller sees is theirs or public: a public one is the admins' to refresh
    if (view.public && !u.admin) throw new HttpProblem(permissionDenied(`/v1/images/${name}`, u.name, 'update'), 403);
    if (el.attributes.source === undefined)
      throw new HttpProblem(
        unsupported(el.id.key, 'refresh of an image without a source', 'it was uploaded as an archive: upload it again'),
        409,
      );
    const refresh = operationsOf(this.b).refresh;
    if (refresh === undefined)
      throw new HttpProblem(unsupported(el.id.key, 'refreshing images', 'the backend cannot fetch sources again'));
    const cur = this.refreshes.get(name);
    const r = cur?.view.state === 'running' ? cur : this.startRefresh(name, () => refresh(el.id.key)());
    if (wait !== undefined) await Promise.race([r.done, delay(wait)]);
    return this.visible(u, name);
  }

  /** Runs a refresh in the background, keeping its state for the image's view. */
  private startRefresh(name: string, run: () => Promise<E.Either<AnyError, { changed: boolean }>>): Refresh {
    const r: Refresh = {
      view: { state: 'running', changed: null, started: new Date().toISOString(), ended: null, error: null },
      done: Promise.resolve(),
    };
    const end = (patch: Partial<RefreshView>): void => {
      r.view = { ...r.view, ...patch, ended: new Date().toISOString() };
    };
    r.done = run().then(
      (x) =>
        E.isRight(x) ? end({ state: 'done', changed: x.right.changed }) : end({ state: 'failed', error: problemOf(x.left) }),
      (err: unknown) => end({ state: 'failed', error: problemOf(runtimeError(this.idOf(name), 'the refresh failed', err)) }),
    );
    this.refreshes.set(name, r);
    return r;
  }

  async counts(): Promise<Record<'creating' | 'ready' | 'failed', number>> {
    const n = { creating: 0, ready: (await listElements(this.b, 'image', { store: this.store })).length, failed: 0 };
    for (const p of this.pending.values()) n[p.state]++;
    return n;
  }
}

/** One create: who, what name, public or not, how long to wait, and how to make it. */
interface CreateCall {
  readonly user: UserRecord;
  readonly name: string;
  readonly isPublic: boolean;
  readonly wait: number | undefined;
  readonly make: (ro: Record<string, Uint8Array>) => Promise<E.Either<AnyError, Element>>;
  /** An upload: resolves once its body was read to its end (or cut). */
  readonly received?: Promise<void>;
  /** Free text kept in the image's metadata. */
  readonly description?: string;
}

/** An upload's body, at most `MAX_UPLOAD` bytes; `received` resolves once it was read to its end, cut, or given up. */
const limitedUpload = (body: Readable): { data: AsyncIterable<Uint8Array>; received: Promise<void> } => {
  let gotAll = (): void => undefined;
  const received = new Promise<void>((r) => (gotAll = r));
  const chunks: AsyncIterable<unknown> = body;
  const data = async function* (): AsyncIterable<Uint8Array> {
    let bytes = 0;
    try {
      for await (const c of chunks) {
        if (!(c instanceof Uint8Array)) continue;
        bytes += c.length;
        if (bytes > MAX_UPLOAD) throw new Error(`the archive is larger than ${MAX_UPLOAD} bytes`);
        yield c;
      }
    } finally {
      gotAll(); // read to its end, cut by the client, or given up by the create
    }
  };
  return { data: data(), received };
};

/** Refuses what a non-admin may not name as a source (paths, repositories that are not http(s)), and blocked URLs. */
const checkSource = async (u: UserRecord, s: NewImage['source'], egress: EgressGuard): Promise<void> => {
  if ((s.type === 'path' || (s.type === 'git' && !publicRepo(s.repo))) && !u.admin)
    throw new HttpProblem(permissionDenied('/v1/images', u.name, 'create'), 403);
  await refuseBlocked(
    egress,
    s.type === 'url' ? s.url : s.type === 'git' ? s.repo : undefined,
    `source.${s.type === 'url' ? 'url' : 'repo'}`,
  );
};
type NewImage = t.TypeOf<typeof NewImageC>;

const CREATED = {
  201: { description: 'ready within ?wait', ...json(ImageViewC) },
  202: { description: 'creating: follow Location', ...json(ImageViewC), headers: { location: '/v1/images/{name}' } },
};

/**
 * The image routes as a plugin (to register in the authenticated scope), and the book of
 * images the metrics read.
 */
export const imageRoutes = (
  b: Backend,
  policy: Policy,
  egress: EgressGuard,
  quotas?: QuotaDesk,
): { plugin: FastifyPluginAsync; book: ImageRoutes } => {
  const book = new ImageBook(b, policy.imageStore, quotas);
  const plugin: FastifyPluginAsync = async (scope) => {
    // archive uploads arrive as a stream, not parsed (in this scope only)
    scope.addContentTypeParser(['application/x-tar', 'application/octet-stream'], (_req, payload, done) => done(null, payload));
    registerReads(scope, book);
    registerCreates(scope, book, b, egress);
    registerChanges(scope, book);
  };
  return { plugin, book };
};

/** `GET /v1/images` and `GET /v1/images/{name}`. */
const registerReads = (app: FastifyInstance, book: ImageBook): void => {
  route(app, {
    method: 'GET',
    url: '/v1/images',
    summary: 'The images the caller may use: its own and the public ones (admins: all)',
    tags: ['images'],
    auth: 'user',
    responses: { 200: { description: 'the images', ...json(ImageListC) } },
    handler: async ({ user }) => ({ items: await book.list(user) }),
  });
  route(app, {
    method: 'GET',
    url: '/v1/images/:name',
    summary: 'An image: creating, ready or failed (with the problem)',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    responses: { 200: { description: 'the image', ...json(ImageViewC) }, 404: problem('no such image (or not the caller’s)') },
    handler: async ({ user, params }) => (await book.visible(user, params.name)).view,
  });
};

/** `POST /v1/images` (a source) and `PUT /v1/images/{name}` (an archive). */
const registerCreates = (app: FastifyInstance, book: ImageBook, b: Backend, egress: EgressGuard): void => {
  route(app, {
    method: 'POST',
    url: '/v1/images',
    summary: 'Create an image from a source (asynchronous: 202 and Location: /v1/images/{name}; ?wait=N: 201 when ready)',
    tags: ['images'],
    auth: 'user',
    body: NewImageC,
    query: CreateQueryC,
    responses: {
      ...CREATED,
      403: problem('a path source, a git repository that is not http(s), or a public image, by a non-admin'),
      409: problem('an image of that name exists (NameCollision)'),
    },
    handler: async ({ reply, user, body, query }) => {
      await checkSource(user, body.source, egress);
      const options = { source: body.source };
      const id = book.idOf(body.name);
      const make = (ro: Record<string, Uint8Array>) => b.stores.image.create({ id, ro, options })();
      const isPublic = body.public === true;
      const about = body.description === undefined ? {} : { description: body.description };
      return book.start(reply, { user, name: body.name, isPublic, wait: query?.wait, make, ...about });
    },
  });
  route(app, {
    method: 'PUT',
    url: '/v1/images/:name',
    summary: 'Create an image from an image archive (`docker save`) as the body (application/x-tar); asynchronous like POST',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    query: CreateQueryC,
    responses: {
      ...CREATED,
      409: problem('an image of that name exists (NameCollision)'),
      415: problem('the body is not application/x-tar or application/octet-stream'),
    },
    handler: async ({ req, reply, user, params, query }) => {
      if (!(req.body instanceof Readable))
        throw new HttpProblem(invalidEntry('send the archive as application/x-tar', '', ['body']), 415);
      const { data, received } = limitedUpload(req.body);
      const id = book.idOf(params.name);
      const options = { source: { type: 'tarball' } };
      const make = (ro: Record<string, Uint8Array>) => b.stores.image.create({ id, ro, data, options })();
      return book.start(reply, { user, name: params.name, isPublic: query?.public === true, wait: query?.wait, make, received });
    },
  });
};

/** `DELETE /v1/images/{name}` and `POST /v1/images/{name}/refresh`. */
const registerChanges = (app: FastifyInstance, book: ImageBook): void => {
  route(app, {
    method: 'DELETE',
    url: '/v1/images/:name',
    summary: 'Remove an image (its owner or an admin); idempotent',
    tags: ['images'],
    auth: 'user',
    params: NameParamsC,
    responses: { 204: { description: 'gone' }, 404: problem('no such image'), 409: problem('in use (InUse)') },
    handler: async ({ reply, user, params }) => {
      await book.remove(user, params.name);
      return reply.code(204).send();
    },
  });
  route(app, {
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
      const { view } = await book.refresh(user, params.name, query?.wait);
      reply.header('location', `/v1/images/${params.name}`);
      return reply.code(view.refresh?.state === 'running' ? 202 : 200).send(view);
    },
  });
};
