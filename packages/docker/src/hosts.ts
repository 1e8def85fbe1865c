/**
 * The host pool (docs/hosts.md): the engines a Docker backend
 * runs on, their states, per-host error tracking and housekeeping.
 *
 * States: a host is `spawned` until a health check (a ping) passes, then `active`. Every call to
 * an engine is bounded (`callTimeoutMs`) and observed: `failures` calls in a row that do not reach
 * it (refused, reset, timed out) make it `inactive`; no new work goes there, and housekeeping
 * probes it back with exponential backoff (`active` again once a ping answers). `drain` makes it
 * `draining` (no new work; running tasks finish or are stopped after a deadline) and then `removed`.
 * Every state change is reported to the backend, which publishes it on the event stream.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import {
  hostKey,
  invalidEntry,
  notFound,
  unavailable,
  type AnyError,
  type Element,
  type InvalidEntry,
  type Logger,
} from '@lessl/core';
import { CallGuard, DEFAULT_CALL_TIMEOUT_MS } from './guard.js';
import { Host } from './host.js';
import { place, type HostState, type PlacementRequest } from './placement.js';
import { hostOf } from './attributes.js';

const positiveInt = t.refinement(t.number, (n) => Number.isSafeInteger(n) && n > 0, 'PositiveInt');
const hostName = t.refinement(t.string, (s) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(s), 'HostName');

/** io-ts codec of a host (`openDockerBackend({ hosts })`), decoded exactly. */
export const HostSpecC = t.exact(
  t.intersection([
    t.type({ name: hostName }),
    t.partial({
      /** `unix:///path/docker.sock`, `tcp://host:port` (https when `tls` is given) or `https://host:port`. */
      url: t.refinement(t.string, (u) => /^(unix:\/\/\/|tcp:\/\/|https?:\/\/)/.test(u), 'EngineUrl'),
      /** Mutual TLS: each a PEM text or the path of a PEM file. */
      tls: t.exact(t.type({ ca: t.string, cert: t.string, key: t.string })),
      labels: t.record(t.string, t.string),
      capacity: t.exact(t.partial({ slots: positiveInt, memoryBytes: positiveInt })),
    }),
  ]),
);
/** A host of a Docker backend: its name, where its engine answers, its labels and capacity. */
export type HostSpec = t.TypeOf<typeof HostSpecC>;

/** io-ts codec of the host policy, decoded exactly. */
export const HostPolicyC = t.exact(
  t.partial({
    /** Calls in a row that do not reach a host before it becomes `inactive` (default 3). */
    failures: positiveInt,
    /** Milliseconds between housekeeping ticks (default 2,000). */
    housekeepingMs: positiveInt,
    /**
     * Bound of one health-check ping (default 3,000, at most `callTimeoutMs`). An active host
     * whose ping fails twice in a row is `inactive`: a frozen or dead engine is noticed within
     * `housekeepingMs + 2 x pingTimeoutMs` (8 s by default).
     */
    pingTimeoutMs: positiveInt,
    /** Longest wait between probes of an inactive host (default 30,000; starts at the tick interval). */
    probeMaxMs: positiveInt,
  }),
);
/** How hosts are watched (see `HostPolicyC`). */
export type HostPolicy = t.TypeOf<typeof HostPolicyC>;

/** A host as the backend reports it (`backend.hosts.list()`). */
export interface HostInfo {
  readonly name: string;
  readonly endpoint: string;
  readonly state: HostState;
  /** When it entered its state (ISO-8601). */
  readonly since: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: { readonly slots?: number; readonly memoryBytes?: number };
  readonly load: { readonly slots: number; readonly memoryBytes: number };
  /** Calls in a row that did not reach it, and the last such failure. */
  readonly failures: number;
  readonly lastError?: string;
}

const pem = (v: string): string => (v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8'));

/** Throws saying what is wrong when TLS material does not parse or the key is not the certificate's. */
const checkTls = (tls: { ca: string; cert: string; key: string }): void => {
  const certs = (what: string, pemText: string): void => {
    const blocks = pemText.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) throw new Error(`${what}: no PEM certificate`);
    for (const b of blocks)
      try {
        new X509Certificate(b);
      } catch (err) {
        throw new Error(`${what}: ${err instanceof Error ? err.message : 'not a certificate'}`, { cause: err });
      }
  };
  certs('ca', tls.ca);
  certs('cert', tls.cert);
  createSecureContext(tls);
};

/** A dockerode client for a host (its TLS material read when given as paths). */
export const clientFor = (spec: HostSpec): E.Either<InvalidEntry, Docker> => {
  const at = (k: string): string[] => [`hosts.${spec.name}.${k}`];
  try {
    const tls = spec.tls === undefined ? undefined : { ca: pem(spec.tls.ca), cert: pem(spec.tls.cert), key: pem(spec.tls.key) };
    // refused here, not at the first call: PEM that does not parse, a key that is not the certificate's
    if (tls !== undefined) checkTls(tls);
    if (spec.url === undefined) return E.right(new Docker());
    if (spec.url.startsWith('unix://')) return E.right(new Docker({ socketPath: spec.url.slice('unix://'.length) }));
    const u = new URL(spec.url.replace(/^tcp:/, spec.tls === undefined ? 'http:' : 'https:'));
    const protocol = u.protocol === 'https:' ? 'https' : 'http';
    return E.right(
      new Docker({
        host: u.hostname,
        port: u.port === '' ? (protocol === 'https' ? 2376 : 2375) : Number(u.port),
        protocol,
        ...(tls ?? {}),
      }),
    );
  } catch (err) {
    const why = err instanceof Error ? err.message : 'bad TLS material';
    return E.left(invalidEntry(`host ${spec.name}: its TLS material is refused: ${why}`, hostKey(spec.name), at('tls')));
  }
};

/** What the pool tells its backend. */
export interface PoolHooks {
  /** A host changed state (published as an event). */
  readonly changed: (host: Host, from: HostState, reason: string) => void;
  /** A host became active for the first time since open (reconcile it, watch it). */
  readonly activated: (host: Host) => Promise<void>;
  /** Stops the tasks still running on a draining host whose deadline passed. */
  readonly stopTasks: (host: Host) => Promise<void>;
  /** Sweeps a host for dangling lessl objects (every `SWEEP_EVERY` ticks). */
  readonly sweep?: (host: Host) => void;
}

/** Default milliseconds between housekeeping ticks. */
export const DEFAULT_HOUSEKEEPING_MS = 2000;
/** Default bound of one health-check ping. */
export const DEFAULT_PING_TIMEOUT_MS = 3000;

/** Every this many housekeeping ticks, active hosts are swept for dangling objects and their resources read again. */
export const SWEEP_EVERY = 12;

/** The backend's hosts (see the module comment). */
export class HostPool {
  private readonly hosts = new Map<string, Host>();
  private readonly endpoints = new Map<string, string>();
  private readonly nextProbe = new Map<string, { at: number; every: number }>();
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  /** Health checks in flight, per host: a slow host never delays another's checks. */
  private readonly checking = new Map<string, Promise<boolean>>();
  /** Ticks in flight (awaited on close). */
  private readonly ticking = new Set<Promise<void>>();
  private closed = false;
  /** Housekeeping ticks so far (every `SWEEP_EVERY`th also sweeps). */
  private ticks = 0;
  readonly failuresToInactive: number;
  readonly housekeepingMs: number;
  readonly probeMaxMs: number;
  readonly pingTimeoutMs: number;
  hooks: PoolHooks | undefined;

  constructor(
    readonly instance: string,
    policy: HostPolicy = {},
    readonly callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS,
    readonly logger?: Logger,
  ) {
    this.failuresToInactive = policy.failures ?? 3;
    this.housekeepingMs = policy.housekeepingMs ?? DEFAULT_HOUSEKEEPING_MS;
    this.probeMaxMs = policy.probeMaxMs ?? 30_000;
    this.pingTimeoutMs = Math.min(policy.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS, callTimeoutMs);
  }

  /**
   * Adds an engine as a host, `spawned` until its first health check passes. Its clients' calls go
   * through `guard` (one is made when not given): bounded by `callTimeoutMs` and observed here.
   */
  add(
    docker: Docker,
    spec: Pick<HostSpec, 'name' | 'labels' | 'capacity'>,
    endpoint: string,
    guard = new CallGuard(this.callTimeoutMs, `${spec.name} (${endpoint})`),
  ): Host {
    const capacity = spec.capacity ?? {};
    const settings = { name: spec.name, labels: { ...spec.labels }, capacity };
    const e = new Host(docker, this.instance, settings, this.logger, guard.run);
    e.state = 'spawned';
    e.callTimeoutMs = this.callTimeoutMs;
    guard.observe = (reached, err) => this.observe(e, reached, err);
    this.hosts.set(spec.name, e);
    this.endpoints.set(spec.name, endpoint);
    return e;
  }

  /** Marks a host that answered at open active (no hooks: the backend adopts it itself). */
  markActive(h: Host): void {
    h.state = 'active';
    h.stateSince = Date.now();
    this.seen.add(h.name);
  }

  /** Forgets a host that never became active (a registration refused). */
  forget(name: string): void {
    if (this.seen.has(name)) return;
    this.hosts.delete(name);
    this.endpoints.delete(name);
    this.nextProbe.delete(name);
  }

  /** How long a frozen or dead engine may stay `active` at most: `housekeepingMs + 2 x pingTimeoutMs`. */
  get detectionBoundMs(): number {
    return this.housekeepingMs + 2 * this.pingTimeoutMs;
  }

  /** The first host: where elements made before there were several hosts live. */
  get primary(): Host {
    const first = this.hosts.values().next();
    if (first.done === true) throw new Error('a host pool has at least one host');
    return first.value;
  }

  get(name: string): Host | undefined {
    return this.hosts.get(name);
  }

  /** Every host (removed ones included). */
  all(): Host[] {
    return [...this.hosts.values()];
  }

  /** The host an element lives on (`attributes.host`; elements older than hosts live on the primary). */
  of(el: Pick<Element, 'attributes'>): Host {
    const name = hostOf(el);
    return (name === undefined ? undefined : this.hosts.get(name)) ?? this.primary;
  }

  /** A host by name that may take new work, or the error saying why not. */
  usable(name: string, id: string): E.Either<AnyError, Host> {
    const h = this.hosts.get(name);
    if (h === undefined) return E.left({ ...notFound(id), message: `no host named ${name}` });
    if (h.state !== 'active') return E.left(unavailable(id, `host ${name} is ${h.state}`));
    return E.right(h);
  }

  /**
   * Places new work (see placement.ts); `Unavailable` saying why each host was refused. A
   * backend with one engine uses it even while inactive (its calls answer for themselves).
   */
  place(id: string, req: PlacementRequest): E.Either<AnyError, Host> {
    const p = place(this.hosts.values(), req);
    if (p.ok) return E.right(p.host);
    const only = this.hosts.size === 1 ? this.primary : undefined;
    if (only?.state === 'inactive' && (req.host === undefined || req.host === only.name)) return E.right(only);
    return E.left(unavailable(id, `no host can take it (${p.refused.join('; ') || 'no hosts'})`));
  }

  /** How the backend reports a host. */
  info(h: Host): HostInfo {
    return {
      name: h.name,
      endpoint: this.endpoints.get(h.name) ?? '',
      state: h.state,
      since: new Date(h.stateSince).toISOString(),
      labels: { ...h.labels },
      capacity: { ...h.capacity },
      load: h.load,
      failures: h.failures,
      ...(h.lastError === undefined ? {} : { lastError: h.lastError }),
    };
  }

  /** Per-host error tracking: every guarded call's outcome. */
  private observe(h: Host, reached: boolean, err?: unknown): void {
    if (reached) {
      h.failures = 0;
      // any call that reaches an inactive host proves it back, as a probe would
      if (h.state === 'inactive') void this.reactivate(h).catch(() => undefined);
      return;
    }
    h.failures++;
    h.lastError = err instanceof Error ? err.message : 'unreachable';
    if (h.state === 'active' && h.failures >= this.failuresToInactive)
      this.setState(h, 'inactive', `${h.failures} calls in a row failed: ${h.lastError}`);
  }

  /** Moves a host to a state and tells the backend. */
  setState(h: Host, to: HostState, reason: string): void {
    if (h.state === to) return;
    const from = h.state;
    h.state = to;
    h.stateSince = Date.now();
    if (to === 'inactive') this.nextProbe.set(h.name, { at: Date.now() + this.housekeepingMs, every: this.housekeepingMs });
    this.hooks?.changed(h, from, reason);
  }

  /** Health-checks a host: a ping bounded by `pingTimeoutMs`; a failure is kept as its `lastError`. */
  private async probe(h: Host): Promise<boolean> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.pingTimeoutMs);
    try {
      await h.clients.system.ping({ signal: ac.signal });
      return true;
    } catch (err) {
      h.lastError = ac.signal.aborted
        ? `the Docker engine ${h.name} (${this.endpoints.get(h.name) ?? ''}) did not answer GET /_ping within ${this.pingTimeoutMs} ms`
        : err instanceof Error
          ? err.message
          : 'unreachable';
      h.lastErrorCause = ac.signal.aborted ? undefined : err;
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Makes a spawned or inactive host active when it answers; an active host whose ping fails
   * twice in a row (the second at once) becomes inactive. Answers whether it is active.
   */
  async check(h: Host): Promise<boolean> {
    if (h.state === 'removed' || h.state === 'draining') return false;
    let ok = await this.probe(h);
    if (!ok && h.state === 'active') ok = await this.probe(h);
    if (!ok) {
      if (h.state === 'active') {
        this.setState(h, 'inactive', `health check failed twice: ${h.lastError ?? 'unreachable'}`);
        return false;
      }
      const p = this.nextProbe.get(h.name) ?? { at: 0, every: this.housekeepingMs };
      const every = Math.min(p.every * 2, this.probeMaxMs);
      this.nextProbe.set(h.name, { at: Date.now() + every, every });
      return false;
    }
    h.failures = 0;
    if (h.resources === undefined) await this.readResources(h);
    if (h.state === 'active') return true;
    await this.reactivate(h);
    return true;
  }

  /** Reads what the engine has (CPUs, memory), for placement. */
  async readResources(h: Host): Promise<void> {
    const info = await h.clients.system.info().catch(() => undefined);
    if (typeof info?.NCPU === 'number' && typeof info.MemTotal === 'number')
      h.resources = { cpus: info.NCPU, memoryBytes: info.MemTotal };
  }

  /** Makes a host that answered active; the first time, the backend adopts it (reconcile, watch). */
  private async reactivate(h: Host): Promise<void> {
    if (h.state !== 'spawned' && h.state !== 'inactive') return;
    this.nextProbe.delete(h.name);
    if (!this.seen.has(h.name)) {
      this.seen.add(h.name);
      await this.hooks?.activated(h).catch(() => undefined);
    }
    this.setState(h, 'active', h.state === 'spawned' ? 'health check passed' : 'answers again');
  }

  /**
   * One housekeeping tick: probes spawned hosts and inactive ones that are due (with backoff),
   * pings active ones (failures count towards `inactive`), retries pending removals; every
   * `SWEEP_EVERY` ticks also sweeps active hosts for dangling lessl objects (containers, images,
   * volumes no record owns) and reads their CPUs and memory again.
   */
  async tick(now = Date.now()): Promise<void> {
    const work: Promise<unknown>[] = [];
    const sweep = ++this.ticks % SWEEP_EVERY === 0;
    for (const h of this.hosts.values()) {
      if (h.state === 'removed' || h.state === 'draining') continue;
      if (h.state === 'inactive') {
        const p = this.nextProbe.get(h.name);
        if (p !== undefined && p.at > now) continue;
      }
      const inFlight = this.checking.get(h.name);
      if (inFlight !== undefined) {
        work.push(inFlight); // still checking since an earlier tick: that check stands for this one
        continue;
      }
      const checked = this.check(h).finally(() => this.checking.delete(h.name));
      this.checking.set(h.name, checked);
      work.push(
        checked.then(async (ok) => {
          if (!ok) return;
          await h.janitor.kick();
          if (sweep) {
            this.hooks?.sweep?.(h);
            await this.readResources(h);
          }
        }),
      );
    }
    await Promise.all(work);
  }

  /** Starts housekeeping every `housekeepingMs` (does not keep the process alive). */
  start(): void {
    if (this.timer !== undefined || this.closed) return;
    // ticks are not chained: each host's checks are (see tick), so one slow host delays nobody
    this.timer = setInterval(() => {
      if (this.closed) return;
      const t = this.tick().catch(() => undefined);
      this.ticking.add(t);
      void t.finally(() => this.ticking.delete(t));
    }, this.housekeepingMs);
    this.timer.unref();
  }

  /**
   * Drains a host: no new work goes there; waits for its executors to stop (up to `deadlineMs`),
   * then stops what still runs, and marks it `removed`.
   */
  async drain(name: string, deadlineMs: number): Promise<E.Either<AnyError, HostInfo>> {
    const h = this.hosts.get(name);
    if (h === undefined) return E.left({ ...notFound(hostKey(name)), message: `no host named ${name}` });
    if (h.state === 'removed') return E.right(this.info(h));
    this.setState(h, 'draining', `drain requested (deadline ${deadlineMs} ms)`);
    const until = Date.now() + deadlineMs;
    while (h.load.slots > 0 && Date.now() < until && !this.closed) await new Promise((r) => setTimeout(r, 100));
    if (h.load.slots > 0) await this.hooks?.stopTasks(h).catch(() => undefined);
    await h.settled();
    this.setState(h, 'removed', h.load.slots > 0 ? 'drained (tasks still stopping)' : 'drained');
    return E.right(this.info(h));
  }

  /** Stops housekeeping. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await Promise.all([...this.ticking]);
  }
}

/** The event a host's state change publishes (`type: 'host'`, id `host://<name>`). */
export const hostEvent = (
  info: HostInfo,
  from: string,
  reason: string,
): { type: 'host'; id: string; revision: number; detail: Record<string, unknown> } => ({
  type: 'host',
  id: hostKey(info.name),
  revision: 0,
  detail: { state: info.state, from, reason, endpoint: info.endpoint },
});
