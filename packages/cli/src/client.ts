/**
 * A tiny typed client of the lessl task service's REST API (`@lessl/service`), on Node's fetch.
 * Every failure is a `LesslError` carrying the service's problem document (with the lessl tag).
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { PoolView as CorePoolView } from '@lessl/core';
import { field } from './unknown.js';
import type { ImageSource, JobView, NewRouteView, Problem, QuotaPatch, RouteItem, TaskView, UserQuotaView } from '@lessl/service';

export type { JobView, NewRouteView, Problem, RouteItem, TaskView } from '@lessl/service';

/** A page of tasks (`GET /v1/tasks`). */
export interface TaskPage {
  readonly items: readonly TaskView[];
  readonly next: string | null;
}

/** What `POST /v1/tasks` and `PUT /v1/tasks/{id}` answered. */
export type Submitted =
  | { readonly kind: 'job'; readonly job: JobView }
  | { readonly kind: 'task'; readonly task: TaskView }
  | { readonly kind: 'batch'; readonly items: readonly TaskView[] };

/** A user as the service answers its creation (the token is shown once). */
export interface NewUser {
  readonly name: string;
  readonly admin: boolean;
  readonly token: string;
}

/**
 * One Server-Sent Event of `GET /v1/events`: `id` is its id for this user (opaque: resume after
 * it with `since`), `type` the lessl event type, `data` the lessl event.
 */
export interface ServiceEvent {
  readonly id: string;
  readonly type: string;
  readonly data: unknown;
}

/** Options of `LesslClient`. */
export interface ClientOptions {
  /** The service's base URL (default: env LESSL_URL, else `DEFAULT_URL`). */
  readonly url?: string;
  /** A bearer token (default: env LESSL_TOKEN). */
  readonly token?: string;
}

/** The URL the client uses without LESSL_URL (the port `lessl serve` listens on by default). */
export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** A failed request: the service's problem document (or one made for a transport failure, status 0). */
/** An image as the service reports it. */
export interface ImageView {
  readonly name: string;
  readonly id: string;
  readonly owner: string | null;
  readonly public: boolean;
  readonly state: 'creating' | 'ready' | 'failed';
  readonly size: number | null;
  readonly created: string | null;
  readonly lastUsed: string | null;
  readonly error: Problem | null;
  /** The text given when it was created (older services do not report it). */
  readonly description?: string | null;
  /** The last refresh since the service started (older services do not report it). */
  readonly refresh?: {
    readonly state: 'running' | 'done' | 'failed';
    readonly changed: boolean | null;
    readonly started: string;
    readonly ended: string | null;
    readonly error: Problem | null;
  } | null;
}

/** The body of `POST /v1/images`: a name and a source. */
export interface NewImage {
  readonly name: string;
  readonly source: ImageSource;
  readonly public?: boolean;
  readonly description?: string;
}

/** What `GET|PUT /v1/pool` answer (the pool view of `@lessl/core`). */
export type PoolView = CorePoolView;

/** What `POST /v1/images/purge` answers. */
export interface PurgeView {
  readonly removed: readonly string[];
  readonly freedBytes: number;
  readonly inUse: readonly { readonly id: string; readonly why: string }[];
  readonly dryRun: boolean;
}

export class LesslError extends Error {
  constructor(
    readonly problem: Problem,
    readonly status: number = problem.status,
  ) {
    super(`${problem.tag}: ${problem.detail}`);
    this.name = 'LesslError';
  }
  /** The lessl error tag (`NotFound`, `InvalidEntry`, ...). */
  get tag(): string {
    return this.problem.tag;
  }
}

/** A problem document made on the client side. */
export const clientProblem = (tag: string, detail: string, status = 0, keys?: readonly string[]): Problem => ({
  type: `urn:lessl:error:${tag}`,
  title: tag,
  status,
  detail,
  tag,
  ...(keys === undefined ? {} : { keys: [...keys] }),
});

const isProblem = (u: unknown): u is Problem =>
  typeof u === 'object' &&
  u !== null &&
  'tag' in u &&
  typeof u.tag === 'string' &&
  'detail' in u &&
  typeof u.detail === 'string' &&
  'status' in u &&
  typeof u.status === 'number';

/** Why fetch failed, from its `cause`: a system error code (ECONNREFUSED, ...), else its message. */
const causeCode = (e: unknown): string | undefined => {
  const c = field(e, 'cause');
  const errors = field(c, 'errors');
  const code = field(c, 'code') ?? (Array.isArray(errors) ? field(errors[0], 'code') : undefined) ?? field(c, 'message');
  return typeof code === 'string' ? code : undefined;
};

/**
 * A successful answer's JSON body, as the type the service documents for it (its OpenAPI
 * document): the one place the client takes the service at its word.
 */
const answerOf = async <A>(r: Response): Promise<A> => (await r.json()) as A;

/** Request options of `LesslClient.request`. */
export interface RequestOptions {
  readonly json?: unknown;
  readonly body?: Uint8Array;
  readonly contentType?: string;
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

const FINAL = new Set(['done', 'failed', 'cancelled']);
const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

/** A client of one service, as one user (its token). */
export class LesslClient {
  /** The base URL, without a trailing slash. */
  readonly url: string;
  private readonly token: string | undefined;
  private routeSet: Promise<Set<string>> | undefined;

  constructor(o: ClientOptions = {}) {
    this.url = (o.url ?? process.env.LESSL_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    const token = o.token ?? process.env.LESSL_TOKEN;
    this.token = token === '' ? undefined : token;
  }

  /** Sends a request; answers the response when its status is below 400 (303 is not followed), else throws its problem. */
  async request(method: string, path: string, o: RequestOptions = {}): Promise<Response> {
    const u = new URL(`${this.url}${path}`);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json, */*', ...(o.headers ?? {}) };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let body: string | Uint8Array | undefined;
    if (o.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(o.json);
    } else if (o.body !== undefined) {
      headers['content-type'] = o.contentType ?? 'application/octet-stream';
      body = o.body;
    }
    let r: Response;
    try {
      r = await fetch(u, {
        method,
        headers,
        redirect: 'manual',
        ...(body === undefined ? {} : { body }),
        signal: o.signal ?? null,
      });
    } catch (e) {
      if (o.signal?.aborted === true) throw e;
      const code = causeCode(e);
      throw new LesslError(
        clientProblem(
          'Unavailable',
          `cannot reach the service at ${this.url}${code === undefined ? '' : ` (${code})`}: is it running? start one with \`lessl serve\`, or point LESSL_URL (--url) at it`,
        ),
      );
    }
    if (r.status < 400) return r;
    if (r.status === 401) throw this.unauthenticated(r, method, path);
    const text = await r.text().catch(() => '');
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      doc = undefined;
    }
    throw new LesslError(
      isProblem(doc)
        ? doc
        : clientProblem(
            r.status >= 500 ? 'RuntimeError' : 'InvalidEntry',
            `${method} ${path}: HTTP ${r.status} ${text.slice(0, 200)}`,
            r.status,
          ),
      r.status,
    );
  }

  /** A 401: the service took the caller as anonymous; say whether the token was missing or is not valid. */
  private unauthenticated(r: Response, method: string, path: string): LesslError {
    void r.body?.cancel();
    const detail =
      this.token === undefined
        ? `no token: set LESSL_TOKEN or pass --token (${method} ${path})`
        : `the token is invalid: the service knows no user with it; check LESSL_TOKEN or --token (${method} ${path})`;
    return new LesslError(clientProblem('PermissionDenied', detail, 401, ['token']), 401);
  }

  private async json<A>(method: string, path: string, o: RequestOptions = {}): Promise<A> {
    return answerOf<A>(await this.request(method, path, o));
  }

  private async submitted(r: Response): Promise<Submitted> {
    // 202: the job; 201: the task, or a batch's page of tasks
    const body = await answerOf<JobView | TaskView | TaskPage>(r);
    if ('items' in body) return { kind: 'batch', items: body.items };
    return 'commands' in body ? { kind: 'task', task: body } : { kind: 'job', job: body };
  }

  /** `POST /v1/tasks`: submits a seed-001 task spec (or a batch); with `wait`, the finished task when it ends within that many seconds. */
  async submit(spec: unknown, o: { wait?: number; idempotencyKey?: string; signal?: AbortSignal } = {}): Promise<Submitted> {
    const r = await this.request('POST', '/v1/tasks', {
      json: spec,
      query: { wait: o.wait },
      ...(o.idempotencyKey === undefined ? {} : { headers: { 'idempotency-key': o.idempotencyKey } }),
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    });
    return this.submitted(r);
  }

  /** `GET /v1/jobs/{id}`: the job (done jobs answer 303; their view is still the body). */
  job(id: string, signal?: AbortSignal): Promise<JobView> {
    return this.json('GET', `/v1/jobs/${encodeURIComponent(id)}`, signal === undefined ? {} : { signal });
  }

  /** Polls a job until it is done, failed or cancelled; `onChange` sees each new state. */
  async settle(
    id: string,
    o: { intervalMs?: number; signal?: AbortSignal; onChange?: (j: JobView) => void } = {},
  ): Promise<JobView> {
    let last = '';
    for (;;) {
      const j = await this.job(id, o.signal);
      if (j.state !== last) o.onChange?.(j);
      last = j.state;
      if (FINAL.has(j.state)) return j;
      await sleep(o.intervalMs ?? 50, o.signal);
    }
  }

  /** `GET /v1/tasks/{id}`. */
  task(id: string): Promise<TaskView> {
    return this.json('GET', `/v1/tasks/${encodeURIComponent(id)}`);
  }

  /** `GET /v1/tasks`: one page of the caller's tasks, newest first. */
  tasks(q: { state?: string; job?: string; name?: string; limit?: number; cursor?: string } = {}): Promise<TaskPage> {
    return this.json('GET', '/v1/tasks', { query: q });
  }

  /** Every page of `GET /v1/tasks`. */
  async allTasks(q: { state?: string; name?: string } = {}): Promise<TaskView[]> {
    const all: TaskView[] = [];
    let cursor: string | undefined;
    do {
      const p = await this.tasks({ ...q, limit: 500, ...(cursor === undefined ? {} : { cursor }) });
      all.push(...p.items);
      cursor = p.next ?? undefined;
    } while (cursor !== undefined);
    return all;
  }

  /** `GET /v1/tasks/{id}/logs`: the output as it arrives; with `follow`, until the task ends. */
  async *logs(id: string, o: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const r = await this.request('GET', `/v1/tasks/${encodeURIComponent(id)}/logs`, {
      query: { follow: o.follow === true ? 'true' : undefined },
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    });
    if (r.body === null) return;
    try {
      for await (const chunk of r.body) yield chunk;
    } catch (e) {
      if (o.signal?.aborted !== true) throw e;
    }
  }

  /** `PUT /v1/tasks/{id}`: runs more commands in a running daemon task. */
  async exec(
    id: string,
    cmd: readonly string[],
    o: { env?: Record<string, string>; pwd?: string; wait?: number } = {},
  ): Promise<Submitted> {
    const json = { cmd, ...(o.env === undefined ? {} : { env: o.env }), ...(o.pwd === undefined ? {} : { pwd: o.pwd }) };
    return this.submitted(await this.request('PUT', `/v1/tasks/${encodeURIComponent(id)}`, { json, query: { wait: o.wait } }));
  }

  /** `DELETE /v1/tasks/{id}`: kills and removes a task (idempotent). */
  async remove(id: string): Promise<void> {
    await this.request('DELETE', `/v1/tasks/${encodeURIComponent(id)}`);
  }

  /** `GET /v1/events`: the caller's lessl events as they happen (after `since`, an event id; `'0'`: from the start). Ends when `signal` aborts or the service closes. */
  async *events(o: { since?: string; signal?: AbortSignal } = {}): AsyncGenerator<ServiceEvent> {
    const r = await this.request('GET', '/v1/events', {
      query: { since: o.since },
      headers: { accept: 'text/event-stream' },
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    });
    if (r.body === null) return;
    const queue: ServiceEvent[] = [];
    const parser = createParser({
      onEvent: (m: EventSourceMessage) => {
        let data: unknown = m.data;
        try {
          data = JSON.parse(m.data);
        } catch {
          // not JSON: keep the text
        }
        queue.push({ id: m.id ?? '', type: m.event ?? 'message', data });
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of r.body) {
        parser.feed(decoder.decode(chunk, { stream: true }));
        for (let e = queue.shift(); e !== undefined; e = queue.shift()) yield e;
      }
    } catch (e) {
      if (o.signal?.aborted !== true) throw e;
    }
  }

  /** `POST /v1/tasks/{id}/routes`: shares a port of a task; answers the route (shown once) and its path `/r/<route>/`. */
  addRoute(task: string, port: number): Promise<NewRouteView> {
    return this.json('POST', `/v1/tasks/${encodeURIComponent(task)}/routes`, { json: { port } });
  }

  /** `GET /v1/tasks/{id}/routes`: the task's routes, by handle (the routes themselves are not kept). */
  async listRoutes(task: string): Promise<RouteItem[]> {
    return (await this.json<{ items: RouteItem[] }>('GET', `/v1/tasks/${encodeURIComponent(task)}/routes`)).items;
  }

  /** `DELETE /v1/tasks/{id}/routes/{handle}`: revokes a route. */
  async removeRoute(task: string, handle: string): Promise<void> {
    await this.request('DELETE', `/v1/tasks/${encodeURIComponent(task)}/routes/${encodeURIComponent(handle)}`);
  }

  /** `POST /v1/users` (admins): adds a user; answers its token (shown once). */
  addUser(name: string, admin = false): Promise<NewUser> {
    return this.json('POST', '/v1/users', { json: { name, ...(admin ? { admin: true } : {}) } });
  }

  /**
   * `DELETE /v1/users/{name}` (admins; or the user itself): starts the removal of the user and
   * everything it owns; answers the leave job (ended when it ended within `wait` seconds).
   */
  removeUser(name: string, wait?: number): Promise<JobView> {
    return this.json('DELETE', `/v1/users/${encodeURIComponent(name)}`, { query: { wait } });
  }

  /** `GET /v1/users` (admins). */
  users(): Promise<{ name: string; admin: boolean; created: string }[]> {
    return this.json('GET', '/v1/users');
  }

  /** `GET /v1/users/{name}` (admins, or the user itself): the quotas in force, the user's own values, the usage. */
  user(name: string): Promise<UserQuotaView> {
    return this.json('GET', `/v1/users/${encodeURIComponent(name)}`);
  }

  /** `PATCH /v1/users/{name}` (admins): sets a user's own quotas (`null` in one: back to the operator's; `null`: all). */
  setQuotas(name: string, quotas: QuotaPatch | null): Promise<UserQuotaView> {
    return this.json('PATCH', `/v1/users/${encodeURIComponent(name)}`, { json: { quotas } });
  }

  /** `GET /healthz`. */
  health(): Promise<{ status: string; queued: number; running: number }> {
    return this.json('GET', '/healthz');
  }

  /** The routes the service documents in /openapi.json, as `METHOD /path/{param}`. */
  routes(): Promise<Set<string>> {
    this.routeSet ??= this.json<{ paths?: Record<string, Record<string, unknown>> }>('GET', '/openapi.json').then(
      (doc) =>
        new Set(
          Object.entries(doc.paths ?? {}).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)),
        ),
    );
    return this.routeSet;
  }

  /** Throws an `Unsupported` problem naming the route when the service does not offer it. */
  async requireRoute(method: string, path: string): Promise<void> {
    if (!(await this.routes()).has(`${method} ${path}`))
      throw new LesslError(
        clientProblem(
          'Unsupported',
          `the service at ${this.url} has no route ${method} ${path} (not offered by this version)`,
          501,
        ),
      );
  }

  /** `GET /v1/images`: the images the caller may use (its own and the public ones). */
  async images(): Promise<ImageView[]> {
    return (await this.json<{ items: ImageView[] }>('GET', '/v1/images')).items;
  }

  /** `PUT /v1/images/{name}` with an image archive (`docker save`) as the body; resolves once it is ready. */
  async loadImage(name: string, tar: Uint8Array, isPublic = false): Promise<ImageView> {
    const r = await this.request('PUT', `/v1/images/${encodeURIComponent(name)}`, {
      body: tar,
      contentType: 'application/x-tar',
      query: { wait: 600, ...(isPublic ? { public: 'true' } : {}) },
    });
    return this.imageReady(name, await answerOf<ImageView>(r));
  }

  /** `POST /v1/images` of a registry reference; resolves once the image is ready. */
  async pullImage(ref: string, name: string, isPublic = false): Promise<ImageView> {
    return this.createImage({ name, source: { type: 'registry', ref }, ...(isPublic ? { public: true } : {}) });
  }

  /** `POST /v1/images` (a name and a source, as the service takes them); resolves once the image is ready. */
  async createImage(body: NewImage): Promise<ImageView> {
    const r = await this.request('POST', '/v1/images', { query: { wait: 600 }, json: body });
    return this.imageReady(body.name, await answerOf<ImageView>(r));
  }

  /** Polls an image until it is no longer `creating`; a failed one throws its problem. */
  private async imageReady(name: string, first: ImageView): Promise<ImageView> {
    let v = first;
    while (v.state === 'creating') {
      await new Promise((r) => setTimeout(r, 250));
      v = await this.json<ImageView>('GET', `/v1/images/${encodeURIComponent(name)}`);
    }
    if (v.state === 'failed' && v.error !== null) throw new LesslError(v.error);
    return v;
  }

  /** `POST /v1/images/{name}/refresh`: fetches the image's source again; resolves once done (a failed refresh throws its problem). */
  async refreshImage(name: string): Promise<ImageView> {
    const path = `/v1/images/${encodeURIComponent(name)}`;
    let v = await this.json<ImageView>('POST', `${path}/refresh`, { query: { wait: 600 } });
    while (v.refresh?.state === 'running') {
      await new Promise((r) => setTimeout(r, 250));
      v = await this.json<ImageView>('GET', path);
    }
    if (v.refresh?.state === 'failed' && v.refresh.error !== null) throw new LesslError(v.refresh.error);
    return v;
  }

  /** `POST /v1/images/purge` (admins). */
  async purgeImages(o: { unusedForMs?: number; keepBytes?: number; dryRun?: boolean }): Promise<PurgeView> {
    return this.json<PurgeView>('POST', '/v1/images/purge', { json: o });
  }

  /** `GET /v1/pool` (admins). */
  async pool(): Promise<PoolView> {
    return this.json<PoolView>('GET', '/v1/pool');
  }

  /** `PUT /v1/pool` (admins): replaces the profiles. */
  async setPool(config: unknown): Promise<PoolView> {
    return this.json<PoolView>('PUT', '/v1/pool', { json: config });
  }

  /** `DELETE /v1/images/{name}`. */
  async removeImage(name: string): Promise<void> {
    await this.request('DELETE', `/v1/images/${encodeURIComponent(name)}`);
  }
}
