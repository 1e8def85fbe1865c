/**
 * Per-user quotas: tasks not ended, jobs queued, image bytes, volume bytes, and requests per
 * second (a token bucket per user, per address for requests without a known token). The
 * operator's values are `policy.quotas`; a user's own (`PATCH /v1/users/{name}`) replace them one
 * by one. A quota exceeded is a 429 problem naming the quota, its limit and the usage, with
 * `Retry-After`; admission checks and the records they admit are serialized per user, so two
 * requests never both take the last free slot.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit';
import { fromUtf8, LesslError, unavailable, type AnyError, type Element } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import { callerOf } from './auth.js';
import { decodeWith, describe, int, refine, strict } from './codec.js';
import type { DbChange, JobRecord, ServiceDb, TaskRecord, UserRecord } from './db.js';
import { listElements, SERVICE } from './elements.js';
import type { Metrics } from './metrics.js';
import { DEFAULT_QUOTAS, dirOf, type QuotaPolicy, type Quotas, type TaskPlan } from './plan.js';
import { HttpProblem } from './problem.js';

/** The quotas that are held (the rate is the request hook's). */
export type HeldQuota = 'runningTasks' | 'queuedJobs' | 'imageBytes' | 'volumeBytes';

/** What a user holds now, per held quota. */
export type QuotaUsage = Readonly<Record<HeldQuota, number>>;

/** The `reason` label of `lessl_quota_refusals_total` per quota. */
export const REFUSAL_REASONS: Readonly<Record<HeldQuota | 'requestsPerSecond', string>> = {
  runningTasks: 'running_tasks',
  queuedJobs: 'queued_jobs',
  imageBytes: 'image_bytes',
  volumeBytes: 'volume_bytes',
  requestsPerSecond: 'rate',
};

/** Seconds a refusal by a held quota asks the client to wait (tasks end and space is freed; the rate's is its bucket's). */
export const QUOTA_RETRY_AFTER = 5;

/** Routes no rate limit applies to (probes and scrapes). */
const UNLIMITED: ReadonlySet<string> = new Set(['/healthz', '/metrics']);

const count = (what: string) => describe(int(0, Number.MAX_SAFE_INTEGER), what);
const RateC = describe(
  refine(t.number, (n) => Number.isFinite(n) && n > 0 && n <= 1e6, 'requestsPerSecond', {
    type: 'number',
    exclusiveMinimum: 0,
    maximum: 1e6,
  }),
  'requests per second on average (fractions allowed)',
);
const BurstC = describe(int(1, 1e6), 'requests at once past the average (the bucket size)');
const quotaFields = {
  runningTasks: count('tasks not ended (queued or running)'),
  queuedJobs: count('jobs waiting in the queue'),
  imageBytes: count("the sum of the sizes of the user's images, bytes"),
  volumeBytes: count("the sum of the sizes of the user's volumes, bytes"),
  requestsPerSecond: RateC,
  burst: BurstC,
};
const orNull = <C extends t.Mixed>(c: C) => t.union([c, t.null]);

/** Quotas as the API reports them. */
export const QuotasC = strict('Quotas', quotaFields);
/** A change of a user's own quotas: a number sets one, `null` returns it to the operator's, absent leaves it. */
export const QuotaPatchC = strict(
  'QuotaPatch',
  {},
  {
    runningTasks: orNull(quotaFields.runningTasks),
    queuedJobs: orNull(quotaFields.queuedJobs),
    imageBytes: orNull(quotaFields.imageBytes),
    volumeBytes: orNull(quotaFields.volumeBytes),
    requestsPerSecond: orNull(quotaFields.requestsPerSecond),
    burst: orNull(quotaFields.burst),
  },
);
/** The body of `PATCH /v1/users/{name}`. */
export const UserPatchC = strict(
  'UserPatch',
  {},
  { quotas: describe(orNull(QuotaPatchC), "the user's own quotas to change; null: every one back to the operator's") },
);
/** What `GET /v1/users/{name}` answers: the quotas in force, the user's own, the usage. */
export const UserQuotaViewC = strict('UserQuotas', {
  name: t.string,
  admin: t.boolean,
  created: t.string,
  exempt: describe(t.boolean, 'no quota binds this user (an admin, when the policy exempts admins)'),
  quotas: describe(QuotasC, 'the quotas in force: the user’s own, else the operator’s'),
  own: describe(strict('OwnQuotas', {}, quotaFields), 'the user’s own values (the rest are the operator’s)'),
  usage: describe(
    strict('QuotaUsage', {
      runningTasks: t.number,
      queuedJobs: t.number,
      imageBytes: t.number,
      volumeBytes: t.number,
    }),
    'what the user holds now',
  ),
});
/** A user's quotas as `GET /v1/users/{name}` answers them. */
export type UserQuotaView = t.TypeOf<typeof UserQuotaViewC>;
/** A change of a user's own quotas (`PATCH /v1/users/{name}`'s `quotas`). */
export type QuotaPatch = t.TypeOf<typeof QuotaPatchC>;
/** The operator's `policy.quotas` (merged over `DEFAULT_QUOTAS`). */
const PolicyQuotasC = strict('PolicyQuotas', {}, { ...quotaFields, exemptAdmins: t.boolean });

/** The operator's quotas of a policy given to `createServer` or a policy file, checked (a bad one throws InvalidEntry). */
export const quotaPolicyOf = (given: unknown): QuotaPolicy => {
  const r = decodeWith(PolicyQuotasC, given ?? {}, 'policy.quotas');
  if (E.isLeft(r))
    throw new LesslError({ ...r.left, keys: r.left.keys.map((k) => (k === 'policy.quotas' ? k : `policy.quotas.${k}`)) });
  return { ...DEFAULT_QUOTAS, ...r.right };
};

/** The quotas in force for `u`: their own, else the operator's. */
export const quotasOf = (u: UserRecord, p: QuotaPolicy): Quotas => ({
  runningTasks: u.quotas?.runningTasks ?? p.runningTasks,
  queuedJobs: u.quotas?.queuedJobs ?? p.queuedJobs,
  imageBytes: u.quotas?.imageBytes ?? p.imageBytes,
  volumeBytes: u.quotas?.volumeBytes ?? p.volumeBytes,
  requestsPerSecond: u.quotas?.requestsPerSecond ?? p.requestsPerSecond,
  burst: u.quotas?.burst ?? p.burst,
});

/** A user's own quotas after a patch (`null`: every one back to the operator's). */
export const patchQuotas = (u: UserRecord, patch: QuotaPatch | null): Partial<Quotas> => {
  if (patch === null) return {};
  const own: Record<string, number> = { ...(u.quotas ?? {}) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete own[k];
    else if (typeof v === 'number') own[k] = v;
  }
  return own;
};

/** The 429 of a quota: the problem names it, its limit and the usage; `Retry-After` says when to try again. */
export const quotaProblem = (
  quota: HeldQuota | 'requestsPerSecond',
  limit: number,
  usage: number,
  detail: string,
  retryAfter: number,
) => new HttpProblem(unavailable('', detail), 429, { 'retry-after': String(retryAfter) }, { quota, limit, usage });

/** What an admission asks for: tasks, queued jobs, bytes of volumes or images (a count of 0 is not checked). */
export type Ask = Partial<QuotaUsage>;

const live = (r: TaskRecord): boolean => !r.deleted && (r.state === 'queued' || r.state === 'running');

/** The bytes of an element (`size`, or the `sizeBytes` a tmpfs volume is limited to; else unknown: 0). */
const bytesOf = (el: Element): number => {
  const a = el.attributes;
  return typeof a.size === 'number' ? a.size : typeof a.sizeBytes === 'number' ? a.sizeBytes : 0;
};

/** The bytes of a tar of files of these sizes, as a per-task volume holds them (a header and 512-byte blocks each, the end). */
const tarBytes = (sizes: readonly number[]): number => sizes.reduce((n, b) => n + 512 + Math.ceil(b / 512) * 512, 1024);

/**
 * The bytes a batch of tasks puts in per-task volumes, as far as they are known before the task
 * starts: the inline data (a fetched `src` counts as empty until it is fetched).
 */
export const inlineBytes = (plans: readonly TaskPlan[]): number =>
  plans.reduce((n, p) => {
    const dirs = [...new Set(p.files.map((f) => dirOf(f.path)))];
    const sizeOf = (data: string | undefined): number => Buffer.byteLength(data ?? '', 'base64');
    return n + dirs.reduce((m, d) => m + tarBytes(p.files.filter((f) => dirOf(f.path) === d).map((f) => sizeOf(f.data))), 0);
  }, 0);

/**
 * The quota desk: per-user usage (tasks and jobs from an index the service's records keep up to
 * date, images and volumes from the stores), admissions serialized per user, refusals counted.
 */
export class QuotaDesk {
  private readonly tasks = new Map<string, Set<string>>();
  private readonly queued = new Map<string, Set<string>>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly db: ServiceDb,
    private readonly backend: Backend,
    readonly policy: QuotaPolicy,
    private readonly refused: (reason: string) => void,
    private readonly imageStore: string,
  ) {
    for (const r of db.tasks.values()) this.index(this.tasks, r.owner, r.id, live(r));
    for (const j of db.jobs.values()) this.index(this.queued, j.owner, j.id, j.state === 'queued');
    db.watch((c) => this.changed(c));
  }

  /** Keeps the task and job indexes as the records change. */
  private changed(c: DbChange): void {
    for (const r of c.tasks ?? []) this.index(this.tasks, r.owner, r.id, live(r));
    const jobs: readonly JobRecord[] = [...(c.jobs ?? []), ...(c.enqueue ?? []), ...(c.dequeue ?? [])];
    for (const j of jobs) this.index(this.queued, j.owner, j.id, j.state === 'queued');
    for (const id of c.delTasks ?? []) for (const s of this.tasks.values()) s.delete(id);
    for (const id of c.delJobs ?? []) for (const s of this.queued.values()) s.delete(id);
  }

  private index(m: Map<string, Set<string>>, owner: string, id: string, on: boolean): void {
    const s = m.get(owner) ?? new Set<string>();
    if (on) s.add(id);
    else s.delete(id);
    if (s.size === 0) m.delete(owner);
    else m.set(owner, s);
  }

  /** True when no quota binds `u` (an admin, when the policy exempts admins). */
  exempt(u: UserRecord): boolean {
    return u.admin && this.policy.exemptAdmins;
  }

  /** The quotas in force for `u`. */
  of(u: UserRecord): Quotas {
    return quotasOf(u, this.policy);
  }

  /**
   * What `user` holds now. Volume bytes: the sizes of their volumes, and the resource files of
   * their tasks still queued (whose volumes are made when they start).
   */
  async usage(user: string): Promise<QuotaUsage> {
    return {
      runningTasks: await this.held(user, 'runningTasks'),
      queuedJobs: await this.held(user, 'queuedJobs'),
      imageBytes: await this.held(user, 'imageBytes'),
      volumeBytes: await this.held(user, 'volumeBytes'),
    };
  }

  /** What `user` holds of one quota (tasks and jobs from the index; bytes from the stores). */
  private async held(user: string, k: HeldQuota): Promise<number> {
    if (k === 'runningTasks') return this.tasks.get(user)?.size ?? 0;
    if (k === 'queuedJobs') return this.queued.get(user)?.size ?? 0;
    const owned = { store: k === 'imageBytes' ? this.imageStore : 'local', ro: { owner: user } };
    const els = await listElements(this.backend, k === 'imageBytes' ? 'image' : 'volume', owned, SERVICE);
    const bytes = els.reduce((n, el) => n + bytesOf(el), 0);
    return k === 'imageBytes' ? bytes : bytes + this.unsized(user, els);
  }

  /**
   * The resource files of `user`'s tasks whose volumes report no size: those still queued (their
   * volumes are made when they start) and those on a backend that reports none (Docker's local
   * driver), counted as the tar their volume is filled with.
   */
  private unsized(user: string, volumes: readonly Element[]): number {
    const sized = new Map<string, boolean>(); // a task's volumes: does one report its size?
    for (const el of volumes) {
      const task = fromUtf8(el.ro)['lessl.service.task'];
      if (task !== undefined) sized.set(task, sized.get(task) === true || bytesOf(el) > 0);
    }
    const queued = [...(this.tasks.get(user) ?? [])].filter((id) => this.db.tasks.get(id)?.state === 'queued');
    const plans = [...new Set([...sized.keys(), ...queued])].flatMap((id) => {
      const r = sized.get(id) === true ? undefined : this.db.tasks.get(id);
      return r === undefined ? [] : [r.plan];
    });
    return inlineBytes(plans);
  }

  /** Runs `f` after the admissions of `user` before it (one at a time per user). */
  serialize<A>(user: string, f: () => Promise<A>): Promise<A> {
    const p = (this.locks.get(user) ?? Promise.resolve()).then(f);
    const tail = p.catch(() => undefined);
    this.locks.set(user, tail);
    void tail.then(() => (this.locks.get(user) === tail ? this.locks.delete(user) : undefined));
    return p;
  }

  /** The refusal of what `ask` would take past `u`'s quotas, or undefined (the first quota it crosses). */
  async refusal(u: UserRecord, ask: Ask): Promise<HttpProblem | undefined> {
    if (this.exempt(u)) return undefined;
    const q = this.of(u);
    const held = Object.entries(ask).filter((e): e is [HeldQuota, number] => typeof e[1] === 'number' && e[1] > 0);
    if (held.length === 0) return undefined;
    for (const [k, n] of held) {
      const use = await this.held(u.name, k);
      if (use + n > q[k]) {
        this.refused(REFUSAL_REASONS[k]);
        const detail = `quota ${k} exceeded: ${use} in use of ${q[k]}, ${n} more asked; try again once some are freed`;
        return quotaProblem(k, q[k], use, detail, QUOTA_RETRY_AFTER);
      }
    }
    return undefined;
  }

  /**
   * Admits what `ask` takes and makes it with `make`, one admission of `u` at a time: a refusal is
   * thrown (a 429) and nothing is made. `unless`: skip the check (a retry of what was admitted).
   */
  admit<A>(u: UserRecord, ask: Ask, make: () => Promise<A>, unless: () => boolean = () => false): Promise<A> {
    return this.serialize(u.name, async () => {
      const no = unless() ? undefined : await this.refusal(u, ask);
      if (no !== undefined) throw no;
      return make();
    });
  }

  /**
   * After an image of `owner` was made: when their images now take more than `imageBytes`, it is
   * removed again and the error naming the quota is answered (the create fails with it).
   */
  async afterImage(u: UserRecord, id: string): Promise<AnyError | undefined> {
    if (this.exempt(u)) return undefined;
    return this.serialize(u.name, async () => {
      const q = this.of(u).imageBytes;
      const use = await this.held(u.name, 'imageBytes');
      if (use <= q) return undefined;
      await this.backend.stores.image.delete(id, SERVICE)();
      this.refused(REFUSAL_REASONS.imageBytes);
      return unavailable(id, `quota imageBytes exceeded: the image took the usage to ${use} bytes of ${q}; it was removed again`);
    });
  }
}

/** The most callers the rate limit keeps a bucket for (past it, full and least recently used ones are forgotten). */
const MAX_BUCKETS = 10_000;

/** A token bucket per key: `rateOf(key)` tokens a second, at most the burst the limiter gives (`max`). */
const bucketStore = (rateOf: (key: string) => number) =>
  class TokenBuckets implements FastifyRateLimitStore {
    private readonly buckets = new Map<string, { tokens: number; at: number; max: number }>();

    incr(key: string, cb: (err: Error | null, r?: { current: number; ttl: number }) => void, _window: number, max: number) {
      const now = Date.now();
      const rate = rateOf(key);
      const b = this.buckets.get(key);
      if (b === undefined && this.buckets.size >= MAX_BUCKETS) this.forget(now);
      this.buckets.delete(key); // set again below: the map's order is the order of last use
      const tokens = Math.min(max, b === undefined ? max : b.tokens + ((now - b.at) / 1000) * rate);
      if (tokens >= 1) {
        this.buckets.set(key, { tokens: tokens - 1, at: now, max });
        // remaining: whole tokens left; reset: until the bucket is full again
        return cb(null, { current: max - Math.floor(tokens - 1), ttl: ((max - tokens + 1) / rate) * 1000 });
      }
      this.buckets.set(key, { tokens, at: now, max });
      return cb(null, { current: max + 1, ttl: ((1 - tokens) / rate) * 1000 });
    }

    /** Drops the buckets that are full again, then the least recently used down to 90 % (the keys of addresses are unbounded). */
    private forget(now: number): void {
      for (const [k, b] of this.buckets) if (b.tokens + ((now - b.at) / 1000) * rateOf(k) >= b.max) this.buckets.delete(k);
      for (const k of this.buckets.keys()) {
        if (this.buckets.size < MAX_BUCKETS * 0.9) break;
        this.buckets.delete(k);
      }
    }

    child(): FastifyRateLimitStore {
      return this;
    }
  };

/**
 * The rate limit: every request but `/healthz` and `/metrics` takes a token from its caller's
 * bucket (the user its bearer token names, else its address); an empty bucket is a 429 with
 * `Retry-After` and the `x-ratelimit-*` headers. Registered on the root before the routes.
 */
export const installRateLimit = async (app: FastifyInstance, db: ServiceDb, desk: QuotaDesk, metrics: Metrics): Promise<void> => {
  const userOf = (key: string): UserRecord | undefined => (key.startsWith('u:') ? db.users.get(key.slice(2)) : undefined);
  const quotaOf = (key: string): Quotas => {
    const u = userOf(key);
    return u === undefined ? desk.policy : desk.of(u);
  };
  const keyOf = (req: FastifyRequest): string => {
    const u = callerOf(db, req.raw);
    return u === undefined ? `ip:${req.ip}` : `u:${u.name}`;
  };
  await app.register(rateLimit, { global: false, store: bucketStore((k) => quotaOf(k).requestsPerSecond) });
  const limit = app.rateLimit({
    keyGenerator: keyOf,
    timeWindow: 1000,
    max: (_req, key) => quotaOf(key).burst,
    allowList: (req, key) => UNLIMITED.has(req.routeOptions.url ?? '') || desk.exempt(userOf(key) ?? NOT_EXEMPT),
    onExceeded: () => metrics.quotaRefusals.inc({ reason: REFUSAL_REASONS.requestsPerSecond }),
    errorResponseBuilder: (req, ctx) => {
      const q = quotaOf(keyOf(req));
      const after = Math.max(1, Math.ceil(ctx.ttl / 1000));
      const detail = `quota requestsPerSecond exceeded: ${q.requestsPerSecond} requests per second (burst ${q.burst}); retry in ${after} s`;
      return quotaProblem('requestsPerSecond', q.requestsPerSecond, ctx.max, detail, after);
    },
  });
  app.addHook('onRequest', async function (req, reply) {
    await limit.call(this, req, reply);
  });
};

/** Nobody in particular: not an admin. */
const NOT_EXEMPT: UserRecord = { name: '', admin: false, created: '' };
