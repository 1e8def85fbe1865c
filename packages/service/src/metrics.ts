/**
 * Prometheus metrics (prom-client), on a registry of the server's own.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServiceDb } from './db.js';

/** The service's metrics. */
export interface Metrics {
  readonly registry: Registry;
  readonly requests: Histogram<'method' | 'route' | 'status'>;
  readonly accepted: Counter;
  readonly reaped: Counter;
}

/** Makes the metrics; gauges read the queue when scraped. */
export const makeMetrics = (db: ServiceDb, running: () => number): Metrics => {
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
  return { registry, requests, accepted, reaped };
};
