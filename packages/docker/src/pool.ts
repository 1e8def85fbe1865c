/**
 * The warm pool (docs/pool.md). A one-shot task in a new container costs the engine's
 * create and start (~300 ms here); an exec into a running container ~60 ms. So for a profile (an
 * image and the container-level executor options: limits, network, capabilities) the pool keeps
 * containers created and started ahead of need. A warm container's main process is lessl-agent
 * (agent/container.ts): a one-shot task whose executor matches a profile and mounts no volume
 * takes one and runs in it through the agent, a fork and an exec with no engine call; when it
 * ends the container is removed (one task per container: nothing crosses tasks). Without the
 * agent (not built, `agent: false`, or an agent container of the profile that failed to start)
 * the containers idle in a small loop (`idleCmd`) and the task runs with exec. The pool is
 * replenished in the background. Everything else takes the cold path.
 *
 * Sizing: each profile keeps `min` ready containers (never more than `max` ready or starting), all
 * profiles together at most `memoryBytes` of memory limits. A profile not used for `idleMs` drops
 * to zero until its next task (a miss) fills it again. Containers that died while idle are never
 * handed out. Pool containers carry `lessl.pool=<profile>` and this registry's label: a crash
 * leaves them to the next open, which removes every one no executor record holds.
 */
import { createHash, randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { logError, type PoolView } from '@lessl/core';
import { agentBinary } from './agent/binary.js';
import { AgentContainer } from './agent/container.js';
import type { Host, WarmContainers } from './host.js';
import { poolLabels } from './labels.js';

/** The container-level settings a warm container is made with and a task must match. */
export interface ContainerBase {
  readonly Image: string;
  readonly HostConfig: Docker.HostConfig;
}

/** A profile, resolved: its key, image and settings. */
export interface WarmProfile {
  readonly key: string;
  /** The image element it serves. */
  readonly image: string;
  readonly base: ContainerBase;
  readonly min: number;
  readonly max: number;
  readonly idleMs: number;
  readonly idleCmd: readonly string[];
}

/** What the pool reports: the pool view every side shares (`PoolView` in `@lessl/core`). */
export type PoolStats = PoolView;

/** The default command that keeps a warm container alive (needs `sh` and `sleep` in the image). */
export const IDLE_CMD = ['sh', '-c', 'while :; do sleep 3600; done'] as const;
/** Default memory cap of all pool containers together. */
export const POOL_MEMORY_CAP = 4 * 1024 ** 3;
/**
 * How long a taken container's replacement waits for its task to end before it starts anyway.
 * Starting a container costs the engine (and, on a small machine, the CPU) more than the task's
 * whole exec: started beside the task it slows the task down (see docs/pool.md).
 */
export const REFILL_DEFER_MS = 1000;

/** The key of a container base: equal settings give equal keys. */
export const warmKey = (b: ContainerBase): string => {
  const stable = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(stable)
      : typeof v === 'object' && v !== null
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, stable(Reflect.get(v, k))]),
          )
        : v;
  return createHash('sha256')
    .update(JSON.stringify(stable({ Image: b.Image, HostConfig: b.HostConfig })))
    .digest('hex')
    .slice(0, 16);
};

interface Ready {
  readonly id: string;
  /** Its agent, when it runs one (else it idles in `idleCmd`: tasks run with exec). */
  readonly agent?: AgentContainer;
}

interface Slot {
  profile: WarmProfile;
  ready: Ready[];
  starting: number;
  /** Containers taken and still running their task, with when they were taken (their replacement waits, see `take`). */
  lent: Map<string, number>;
  hits: number;
  misses: number;
  failures: number;
  lastUse: number;
  retryAt: number;
  /** Whether its containers run the agent (false once one failed to start: then they idle in `idleCmd`). */
  agent: boolean;
}

/** The pool of one backend (see the module comment). */
export class WarmPool implements WarmContainers {
  private readonly slots = new Map<string, Slot>();
  private memoryCap = POOL_MEMORY_CAP;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private readonly filling = new Set<Promise<void>>();
  /** The agents of containers taken and not yet released. */
  private readonly lentAgents = new Map<string, AgentContainer>();
  /** The slot each taken container came from, until released (its hit is taken back if it could not run its task). */
  private readonly takenFrom = new Map<string, Slot>();

  /** `agent`: fill with agent containers when the agent was built (the backend's `agent` option). */
  constructor(
    private readonly host: Host,
    private readonly agent = true,
  ) {
    this.timer = setInterval(() => this.housekeep(), 1000);
    this.timer.unref();
  }

  /** Replaces the profiles (containers of dropped ones are removed) and fills the new ones. */
  async configure(profiles: readonly WarmProfile[], memoryCapBytes = POOL_MEMORY_CAP): Promise<void> {
    this.memoryCap = memoryCapBytes;
    const keep = new Set(profiles.map((p) => p.key));
    for (const [key, slot] of this.slots)
      if (!keep.has(key)) {
        this.slots.delete(key);
        await this.removeAll(slot.ready.splice(0));
      }
    for (const p of profiles) {
      const slot = this.slots.get(p.key);
      if (slot === undefined)
        this.slots.set(p.key, {
          profile: p,
          ready: [],
          starting: 0,
          lent: new Map(),
          hits: 0,
          misses: 0,
          failures: 0,
          lastUse: Date.now(),
          retryAt: 0,
          agent: this.usesAgent,
        });
      else {
        slot.profile = p;
        await this.removeAll(slot.ready.splice(p.max));
      }
    }
    await this.fill();
  }

  /** Whether warm containers run the agent (built, and not turned off). */
  get usesAgent(): boolean {
    return this.agent && agentBinary() !== undefined;
  }

  /** The agent of a taken container, when it runs one. */
  agentOf(id: string): AgentContainer | undefined {
    return this.lentAgents.get(id);
  }

  /** Whether a profile with this key exists. */
  has(key: string): boolean {
    return this.slots.has(key);
  }

  /**
   * A warm container of profile `key`, taken out of the pool (the caller owns it now and gives it
   * back with `release` when its task has ended), or undefined (a miss: take the cold path).
   * Not inspected here (a round trip on the hot path): a container that died while idle fails
   * the caller's exec with 404 or 409, and the caller removes it and takes the next one. The
   * replacement of a taken container starts once its task ends (`release`), or `REFILL_DEFER_MS`
   * after the take if the task still runs, so that the engine's container start does not slow
   * the task down.
   */
  take(key: string): string | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined || this.closed) return undefined;
    slot.lastUse = Date.now();
    let r = slot.ready.shift();
    // an agent container that broke while idle (killed, paused) is never handed out
    for (; r?.agent?.broken === true; r = slot.ready.shift()) void this.removeAll([r]);
    if (r !== undefined) {
      slot.hits++;
      slot.lent.set(r.id, slot.lastUse);
      this.takenFrom.set(r.id, slot);
      if (r.agent !== undefined) this.lentAgents.set(r.id, r.agent);
      return r.id;
    }
    slot.misses++;
    void this.fill();
    return undefined;
  }

  /**
   * Gives back a taken container whose task has ended, or that could not run it (dead while
   * idle, `dead`: not counted as a hit): it is removed in the background (`Host.settled`
   * waits for it), then the pool refills.
   */
  release(id: string, dead = false): void {
    for (const slot of this.slots.values()) slot.lent.delete(id);
    const from = this.takenFrom.get(id);
    this.takenFrom.delete(id);
    if (from !== undefined && dead) from.hits--;
    this.lentAgents.get(id)?.close();
    this.lentAgents.delete(id);
    // counted as a background removal now; its request goes out once the task's waiters have run
    this.host.removeAfter(new Promise((r) => setImmediate(r)), 'container', id);
    void this.host
      .settled()
      .then(() => this.fill())
      .catch(() => undefined);
  }

  /** Removes the ready containers made from `imageId` (before the image is removed). */
  async evict(imageId: string): Promise<void> {
    for (const slot of this.slots.values())
      if (slot.profile.base.Image === imageId) {
        this.slots.delete(slot.profile.key);
        const gone = slot.ready.splice(0);
        this.host.logger.info({ profile: slot.profile.key, containers: gone.length }, 'pool: evicted (its image goes)');
        await this.removeAll(gone);
      }
  }

  /**
   * A refreshed image: the ready containers of its old content are removed and its profiles now
   * start containers of the new one (their counters kept).
   */
  async repoint(oldImageId: string, newImageId: string): Promise<void> {
    for (const slot of [...this.slots.values()])
      if (slot.profile.base.Image === oldImageId) {
        const base = { ...slot.profile.base, Image: newImageId };
        this.slots.delete(slot.profile.key);
        const ready = slot.ready.splice(0);
        slot.profile = { ...slot.profile, base, key: warmKey(base) };
        this.slots.set(slot.profile.key, slot);
        await this.removeAll(ready);
      }
    void this.fill().catch(() => undefined);
  }

  /** The pool's figures. */
  stats(): PoolStats {
    const slots = [...this.slots.values()];
    return {
      profiles: slots.map((s) => ({
        key: s.profile.key,
        image: s.profile.image,
        ready: s.ready.length,
        starting: s.starting,
        hits: s.hits,
        misses: s.misses,
        failures: s.failures,
        runsWith: s.agent ? ('agent' as const) : ('exec' as const),
      })),
      hits: slots.reduce((a, s) => a + s.hits, 0),
      misses: slots.reduce((a, s) => a + s.misses, 0),
      containers: slots.reduce((a, s) => a + s.ready.length + s.starting, 0),
      memoryBytes: this.memoryInUse(),
      memoryCapBytes: this.memoryCap,
    };
  }

  /** Stops filling and removes every ready container. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.all(this.filling);
    for (const slot of this.slots.values()) await this.removeAll(slot.ready.splice(0));
    this.slots.clear();
    // tasks still running in taken containers are not followed any more: the next open finds them lost
    for (const agent of this.lentAgents.values()) agent.detach();
    this.lentAgents.clear();
  }

  private memoryInUse(): number {
    let m = 0;
    for (const s of this.slots.values()) m += (s.ready.length + s.starting) * (s.profile.base.HostConfig.Memory ?? 0);
    return m;
  }

  /**
   * Starts containers where a profile has fewer than `min` ready, within `max` and the memory cap.
   * A container taken less than `REFILL_DEFER_MS` ago whose task still runs counts as ready: its
   * replacement waits (see `take`).
   */
  private fill(): Promise<void> {
    const now = Date.now();
    for (const slot of this.slots.values()) {
      const p = slot.profile;
      const idle = now - slot.lastUse > p.idleMs;
      const memory = p.base.HostConfig.Memory ?? 0;
      for (const [id, at] of slot.lent) if (now - at >= REFILL_DEFER_MS) slot.lent.delete(id);
      while (
        !this.closed &&
        !idle &&
        now >= slot.retryAt &&
        slot.ready.length + slot.starting + slot.lent.size < Math.min(p.min, p.max) &&
        this.memoryInUse() + memory <= this.memoryCap
      ) {
        slot.starting++;
        const made = this.start(slot).finally(() => this.filling.delete(made));
        this.filling.add(made);
      }
    }
    return Promise.all(this.filling).then(() => undefined);
  }

  /** Creates and starts one warm container of a profile (with the agent, else idling in `idleCmd`). */
  private async start(slot: Slot): Promise<void> {
    const p = slot.profile;
    const name = `lessl_pool_${p.key}_${randomBytes(4).toString('hex')}`;
    let ready: Ready | undefined;
    try {
      const agent = slot.agent ? await this.startAgent(slot, name) : undefined;
      ready = agent ?? (await this.startIdle(p, name));
      // the agent failed where a plain container starts: the profile uses exec from now on
      if (slot.agent && agent === undefined) {
        slot.agent = false;
        this.host.logger.warn({ profile: p.key }, 'pool: the agent could not run in this profile’s containers; it uses exec');
      }
      if (this.closed || this.slots.get(p.key) !== slot) await this.removeAll([ready]);
      else {
        slot.ready.push(ready);
        this.host.logger.debug(
          { profile: p.key, container: ready.id, ready: slot.ready.length },
          'pool: filled a warm container',
        );
      }
    } catch (err) {
      slot.failures++;
      this.host.logger.warn({ profile: p.key, err: logError(err) }, 'pool: could not start a warm container; retrying later');
      slot.retryAt = Date.now() + 5000; // an image gone, an engine failing: try again later, not in a loop
    } finally {
      slot.starting--;
    }
  }

  /** An agent container of the profile, or undefined when it could not start (nothing is left of it). */
  private async startAgent(slot: Slot, name: string): Promise<Ready | undefined> {
    const p = slot.profile;
    const labels = poolLabels(this.host.instance, p.key);
    const a = await AgentContainer.start(this.host, { name, image: p.base.Image, hostConfig: p.base.HostConfig, labels });
    if (E.isRight(a)) return { id: a.right.id, agent: a.right };
    this.host.logger.warn({ profile: p.key, err: a.left.message }, 'pool: could not start an agent container');
    return undefined;
  }

  /** A container of the profile idling in `idleCmd` (tasks run in it with exec); removed if it cannot start. */
  private async startIdle(p: WarmProfile, name: string): Promise<Ready> {
    const { containers } = this.host.clients;
    const id = await containers.create({
      name,
      Image: p.base.Image,
      Cmd: [...p.idleCmd],
      Entrypoint: [],
      Labels: poolLabels(this.host.instance, p.key),
      Tty: false,
      OpenStdin: false,
      HostConfig: p.base.HostConfig,
    });
    try {
      await containers.start(id);
    } catch (err) {
      await this.host.removeObject('container', id);
      throw err;
    }
    return { id };
  }

  /** Drops idle profiles to zero and agent containers that broke while ready; refills. */
  private housekeep(): void {
    const now = Date.now();
    for (const slot of this.slots.values()) {
      const broken = slot.ready.filter((r) => r.agent?.broken === true);
      if (broken.length > 0) {
        slot.ready = slot.ready.filter((r) => !broken.includes(r));
        void this.removeAll(broken);
      }
      if (now - slot.lastUse > slot.profile.idleMs && slot.ready.length > 0) {
        this.host.logger.info({ profile: slot.profile.key, containers: slot.ready.length }, 'pool: idle profile dropped to zero');
        void this.removeAll(slot.ready.splice(0));
      }
    }
    void this.fill().catch(() => undefined);
  }

  private async removeAll(rs: readonly Ready[]): Promise<void> {
    for (const r of rs) {
      r.agent?.close();
      await this.host.removeObject('container', r.id);
    }
  }
}

/** A profile as a caller gives it (`backend.pool.configure`). */
export interface PoolProfileRequest {
  /** The image element its containers start from. */
  readonly image: string;
  /** The executor options of the tasks it serves (as passed to `composer.handle` or `run`). */
  readonly options?: import('@lessl/core').ExecutorOptions;
  /** The `spec.limits` of the tasks it serves (tasks with other limits take the cold path). */
  readonly limits?: NonNullable<import('@lessl/core').TaskSpec['limits']>;
  /** Ready containers kept (0-64). */
  readonly min: number;
  /** Most ready or starting containers (default `min`). */
  readonly max?: number;
  /** Unused this long, the profile drops to zero until its next task (default 10 minutes). */
  readonly idleMs?: number;
  /**
   * What a warm container runs while it waits when it does not run the agent (default
   * `IDLE_CMD`: needs sh and sleep; see docs/pool.md for when the agent is not used).
   */
  readonly idleCmd?: readonly string[];
}

/** Defaults of a profile. */
export const PROFILE_DEFAULTS = { idleMs: 10 * 60_000, maxMin: 64 } as const;
