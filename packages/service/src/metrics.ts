/**
 * Prometheus metrics (prom-client), on a registry of the server's own.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { FunctionStats, Invocation } from '@lessl/core';
import type { PoolStats } from '@lessl/docker';
import type { ServiceDb } from './db.js';

/** What the pool and image metrics read when scraped. */
export interface Sources {
  /** The warm pool's figures (undefined: the backend has none). */
  readonly pool?: () => PoolStats | undefined;
  /** Images by state. */
  readonly images?: () => Promise<Readonly<Record<string, number>>>;
  /** The functions' figures (containers by state). */
  readonly functions?: () => readonly FunctionStats[];
  /** Connections the proxy holds open into tasks now. */
  readonly proxyConnections?: () => number;
}

/** The service's metrics. */
export interface Metrics {
  /** The prom-client registry of the service's metrics (what `GET /metrics` answers). */
  readonly prometheus: Registry;
  /** @deprecated the same as `prometheus` (the name read as the element registry's). */
  readonly registry: Registry;
  readonly requests: Histogram<'method' | 'route' | 'status'>;
  readonly accepted: Counter;
  readonly reaped: Counter;
  /** Requests refused by a quota, by reason (running_tasks, queued_jobs, image_bytes, volume_bytes, rate). */
  readonly quotaRefusals: Counter<'reason'>;
  /** Counts one invocation of a function (outcome, cold or warm, duration). */
  invoked(inv: Invocation): void;
  /** Counts an invocation that failed instead of ending (its container lost: `Unavailable`; a backend error). */
  failed(fn: string, tag: string): void;
  /** Counts one proxied request or upgrade to a task's port: how it came (owner's token or route), how it ended, its seconds. */
  proxied(via: 'owner' | 'route', outcome: string, seconds: number): void;
}

/** The job gauges: jobs by state, and those this process runs. */
const jobGauges = (registry: Registry, db: ServiceDb, running: () => number): void => {
  new Gauge({
    name: 'lessl_jobs',
    help: 'jobs by state',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const n: Record<string, number> = { queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 };
      for (const j of db.jobs.values()) n[j.state] = (n[j.state] ?? 0) + 1;
      for (const [state, v] of Object.entries(n)) this.set({ state }, v);
    },
  });
  new Gauge({
    name: 'lessl_jobs_running_here',
    help: 'jobs this process is running',
    registers: [registry],
    collect() {
      this.set(running());
    },
  });
};

/** The pool's hit and miss counters: they only grow while a profile lives, so each scrape adds what they grew by. */
const poolCounters = (registry: Registry, sources: Sources): void => {
  const seen = new Map<string, number>();
  const grow = (c: Counter<'profile' | 'image'>, field: 'hits' | 'misses'): void => {
    for (const p of sources.pool?.()?.profiles ?? []) {
      const k = `${field}/${p.key}`;
      const had = seen.get(k);
      const d = p[field] - (had ?? 0);
      seen.set(k, p[field]);
      if (d > 0 || had === undefined) c.inc({ profile: p.key, image: p.image }, Math.max(d, 0)); // a new profile shows 0
    }
  };
  const counter = (field: 'hits' | 'misses', name: string, help: string): void =>
    void new Counter({
      name,
      help,
      labelNames: ['profile', 'image'] as const,
      registers: [registry],
      collect() {
        grow(this, field);
      },
    });
  counter('hits', 'lessl_pool_hits_total', 'one-shot tasks that took a warm container, by pool profile');
  counter('misses', 'lessl_pool_misses_total', 'tasks of a pool profile that found no warm container ready (cold start)');
};

/** The pool's size and the images by state. */
const stateGauges = (registry: Registry, sources: Sources): void => {
  new Gauge({
    name: 'lessl_pool_size',
    help: 'warm containers by pool profile and state (ready: waiting for a task; starting: being made)',
    labelNames: ['profile', 'image', 'state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of sources.pool?.()?.profiles ?? []) {
        this.set({ profile: p.key, image: p.image, state: 'ready' }, p.ready);
        this.set({ profile: p.key, image: p.image, state: 'starting' }, p.starting);
      }
    },
  });
  new Gauge({
    name: 'lessl_images',
    help: 'images by state',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      for (const [state, v] of Object.entries((await sources.images?.()) ?? {})) this.set({ state }, v);
    },
  });
};

/** The functions' metrics: invocations by outcome and start, their durations, containers by state. */
const functionMetrics = (registry: Registry, sources: Sources): Pick<Metrics, 'invoked' | 'failed'> => {
  const failures = new Counter({
    name: 'lessl_function_failures_total',
    help: 'function invocations that failed instead of ending (Unavailable: their container or its agent was lost), by error tag',
    labelNames: ['function', 'tag'] as const,
    registers: [registry],
  });
  const invocations = new Counter({
    name: 'lessl_function_invocations_total',
    help: 'function invocations by outcome (ok: exited 0) and start (cold: a container was started for it)',
    labelNames: ['function', 'outcome', 'start'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'lessl_function_duration_seconds',
    help: 'function invocations: seconds from start to end',
    labelNames: ['function'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    registers: [registry],
  });
  new Gauge({
    name: 'lessl_function_containers',
    help: "a function's containers by state (starting, idle, busy)",
    labelNames: ['function', 'state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const f of sources.functions?.() ?? [])
        for (const state of ['starting', 'idle', 'busy'] as const) this.set({ function: f.name, state }, f.containers[state]);
    },
  });
  return {
    invoked: (inv) => {
      const outcome = inv.exitCode === 0 && inv.reason === 'exited' ? 'ok' : 'error';
      invocations.inc({ function: inv.function, outcome, start: inv.cold ? 'cold' : 'warm' });
      duration.observe({ function: inv.function }, inv.durationMs / 1000);
    },
    failed: (fn, tag) => failures.inc({ function: fn, tag }),
  };
};

/** The proxy's metrics: requests by way and outcome, their durations, connections open into tasks. */
const proxyMetrics = (registry: Registry, sources: Sources): Pick<Metrics, 'proxied'> => {
  const requests = new Counter({
    name: 'lessl_proxy_requests_total',
    help: "requests (and upgrades) proxied to tasks' ports, by way (owner: the owner's token; route: a shared route) and outcome",
    labelNames: ['via', 'outcome'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'lessl_proxy_request_duration_seconds',
    help: "requests proxied to tasks' ports: seconds from the request to the end of its response (upgrades: of the connection)",
    labelNames: ['via'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  new Gauge({
    name: 'lessl_proxy_connections',
    help: 'connections the proxy holds open into tasks',
    registers: [registry],
    collect() {
      this.set(sources.proxyConnections?.() ?? 0);
    },
  });
  return {
    proxied: (via, outcome, seconds) => {
      requests.inc({ via, outcome });
      duration.observe({ via }, seconds);
    },
  };
};

/** Makes the metrics; gauges read the queue, the pool and the images when scraped. */
export const makeMetrics = (db: ServiceDb, running: () => number, sources: Sources = {}): Metrics => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'lessl_' });
  const requests = new Histogram({
    name: 'lessl_http_request_duration_seconds',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const accepted = new Counter({ name: 'lessl_jobs_accepted_total', help: 'jobs accepted', registers: [registry] });
  const reaped = new Counter({
    name: 'lessl_tasks_reaped_total',
    help: 'tasks removed by the TTL reaper',
    registers: [registry],
  });
  const quotaRefusals = new Counter({
    name: 'lessl_quota_refusals_total',
    help: 'requests refused by a quota (429), by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of ['running_tasks', 'queued_jobs', 'image_bytes', 'volume_bytes', 'rate']) quotaRefusals.inc({ reason }, 0);
  jobGauges(registry, db, running);
  poolCounters(registry, sources);
  stateGauges(registry, sources);
  return {
    prometheus: registry,
    registry,
    requests,
    accepted,
    reaped,
    quotaRefusals,
    ...functionMetrics(registry, sources),
    ...proxyMetrics(registry, sources),
  };
};
