/**
 * Keeping the registry true to Docker:
 * - the watcher maps Docker's own event stream in: a container, volume or image removed behind
 *   lessl's back makes its element `deleted` (detail `reason`). Changes lessl made itself are not
 *   repeated. (A task's end is reported by the follower that reads its output, not by the watcher.)
 * - reconciliation on open applies the same rule to what vanished while no backend watched, and
 *   removes lessl-labelled objects of this registry that no record knows (made by a create that
 *   crashed before its record was written) and leftover helper containers. It reports all of it.
 *   Tasks that were running are found again before this (see `resume` in executor.ts).
 */
import type { Readable } from 'node:stream';
import { logError, type Element } from '@lessl/core';
import type { Registry } from '@lessl/level';
import { imageLabel, type Engine } from './engine.js';
import { LABEL } from './names.js';
import { statusOf } from './errors.js';

/**
 * What recovery and reconciliation found and did. The lists grow after open: the late sweeps
 * (see `sweeper`) add what they remove.
 */
export interface ReconcileReport {
  /** Docker objects half-made by creates a crash interrupted (their write intents), removed on open. */
  readonly recovered: string[];
  /** Elements whose Docker object had vanished: their records were deleted (with a `deleted` event). */
  readonly vanished: string[];
  /** Docker objects of this registry that no record knows (and leftover helpers), removed. */
  readonly orphansRemoved: string[];
}

const findBy = (registry: Registry, kind: string, attr: string, value: string): Element | undefined =>
  registry.scan(`${kind}://`, 1, (e) => e.attributes[attr] === value)[0];

/** Deletes a record whose object vanished from Docker, with its event. */
const forget = async (registry: Registry, el: Element, reason: string): Promise<void> =>
  registry.locks.with([el.id.key], async () => {
    if (registry.get(el.id.key) === undefined) return;
    const comp = registry.composition(el.id.key);
    await registry.commit({
      del: [el.id.key],
      ...(comp === undefined ? {} : { delComposition: [el.id.key] }),
      events: [{ type: 'deleted', id: el.id.key, revision: el.revision, detail: { reason } }],
    });
  });

interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  id?: string;
  timeNano?: number;
  time?: number;
}

/** What the watcher tells its owner. */
export interface WatchHooks {
  /** The engine answers again after the event stream broke. */
  readonly reconnected?: () => void;
  /** Docker reports an image of this registry that no element or create in progress owns. */
  readonly unowned?: () => void;
}

/** Whether an element lives on the engine at hand (with several hosts, each watches its own). */
export type Owns = (el: Element) => boolean;

/** Watches Docker events until stopped; reconnects with backoff when the engine goes away. */
export const watch = (
  engine: Engine,
  registry: Registry,
  hooks: WatchHooks = {},
  owns: Owns = () => true,
): { stop(): Promise<void> } => {
  let stopped = false;
  let current: Readable | undefined;
  let since = Math.floor(Date.now() / 1000);
  let queue = Promise.resolve();

  const handle = async (ev: DockerEvent): Promise<void> => {
    const id = ev.Actor?.ID ?? ev.id ?? '';
    const attrs = ev.Actor?.Attributes ?? {};
    if (ev.Type === 'container') {
      if (attrs[LABEL.registry] !== engine.instance || attrs[LABEL.helper] !== undefined) return;
      const executor = attrs[LABEL.id];
      if (executor === undefined) return;
      if (ev.Action === 'destroy') {
        if (engine.expected.delete(id)) return;
        const el = registry.get(executor);
        if (el !== undefined && el.attributes.containerId === id) await forget(registry, el, 'container removed outside lessl');
      }
    } else if (ev.Type === 'volume' && ev.Action === 'destroy') {
      if (engine.expected.delete(id)) return;
      const el = findBy(registry, 'volume', 'volumeName', id);
      if (el !== undefined && owns(el)) await forget(registry, el, 'volume removed outside lessl');
    } else if (ev.Type === 'image' && ev.Action !== 'delete') {
      const owner = attrs[LABEL.id];
      const owned = owner !== undefined && (registry.get(owner) !== undefined || registry.hasIntent(owner));
      if (attrs[LABEL.registry] === engine.instance && !owned) hooks.unowned?.();
    } else if (ev.Type === 'image' && ev.Action === 'delete') {
      engine.images.delete(id);
      if (engine.expected.delete(id)) return;
      const el = findBy(registry, 'image', 'imageId', id);
      // a copy on another host going away is not the image going away
      if (el !== undefined && owns(el)) await forget(registry, el, 'image removed outside lessl');
    }
  };

  const loop = async (): Promise<void> => {
    let backoff = 250;
    let broke = false;
    while (!stopped) {
      let lost = 'the event stream ended';
      try {
        const s = (await engine.docker.getEvents({
          since,
          filters: { type: ['container', 'volume', 'image'] },
        })) as unknown as Readable;
        current = s;
        // a background watcher must not keep the embedding process alive
        (s as unknown as { socket?: { unref?: () => void } }).socket?.unref?.();
        if (stopped) {
          s.destroy();
          break;
        }
        if (backoff > 250 || broke) {
          engine.logger.info({}, 'Docker engine reachable again: event watch resumed');
          hooks.reconnected?.();
        }
        backoff = 250;
        broke = false;
        let rest = '';
        for await (const chunk of s as AsyncIterable<Buffer>) {
          rest += chunk.toString();
          const lines = rest.split('\n');
          rest = lines.pop() ?? '';
          for (const line of lines) {
            if (line.trim() === '') continue;
            const ev = JSON.parse(line) as DockerEvent;
            if (typeof ev.time === 'number') since = ev.time;
            queue = queue.then(() => handle(ev)).catch(() => undefined);
          }
        }
      } catch (err) {
        /* engine gone: retry */
        lost = logError(err);
      }
      if (!broke && !stopped) engine.logger.warn({ err: lost }, 'Docker engine unavailable: event watch lost; retrying');
      broke = true;
      if (stopped) break;
      await new Promise((r) => setTimeout(r, backoff).unref());
      backoff = Math.min(backoff * 2, 5000);
    }
  };
  const running = loop();
  return {
    async stop() {
      stopped = true;
      current?.destroy();
      await running;
      await queue;
    },
  };
};

/** Reconciles the registry with Docker (see the module comment). `recovered` is what intent recovery removed. */
export const reconcile = async (
  engine: Engine,
  registry: Registry,
  recovered: string[] = [],
  report: ReconcileReport = { recovered, vanished: [], orphansRemoved: [] },
  owns: Owns = () => true,
): Promise<ReconcileReport> => {
  const d = engine.docker;
  const gone = async (fn: () => Promise<unknown>): Promise<boolean> => {
    try {
      await fn();
      return false;
    } catch (err) {
      return statusOf(err) === 404;
    }
  };
  for (const i of await d.listImages({ filters: { label: [`${LABEL.registry}=${engine.instance}`] } }).catch(() => []))
    engine.images.add(i.Id);
  for (const el of registry.all()) {
    if (!owns(el)) continue;
    if (el.id.kind === 'image' && (await gone(() => d.getImage(String(el.attributes.imageId)).inspect()))) {
      await forget(registry, el, 'image vanished from Docker');
      report.vanished.push(el.id.key);
    } else if (el.id.kind === 'volume' && (await gone(() => d.getVolume(String(el.attributes.volumeName)).inspect()))) {
      await forget(registry, el, 'volume vanished from Docker');
      report.vanished.push(el.id.key);
    }
  }
  await sweepOrphans(engine, registry, report, 'open');
  engine.logger.info(
    { recovered: report.recovered, vanished: report.vanished, orphansRemoved: report.orphansRemoved },
    'reconciled with Docker',
  );
  return report;
};

/**
 * Removes this registry's labelled Docker objects that no element owns: on open, every helper
 * and every executor container that is not its executor's current one; later (`'late'`), only
 * what no create in progress owns (a write intent marks those), and no executor container.
 */
const sweepOrphans = async (
  engine: Engine,
  registry: Registry,
  report: ReconcileReport,
  when: 'open' | 'late',
): Promise<void> => {
  const d = engine.docker;
  const mine = [`${LABEL.registry}=${engine.instance}`];
  const owned = (key: string | undefined): boolean =>
    key !== undefined && (registry.get(key) !== undefined || registry.hasIntent(key));
  // reported before the call: once asked, the removal happens (the janitor retries what fails)
  const removed = async (kind: 'container' | 'image' | 'volume', ref: string, name: string): Promise<void> => {
    report.orphansRemoved.push(`${kind} ${name}`);
    await engine.removeObject(kind, ref);
  };
  /** The containers executor records hold (a warm container an executor took has no lessl.id). */
  const held = new Set(
    registry
      .scan('executor://', Number.MAX_SAFE_INTEGER, (e) => typeof e.attributes.containerId === 'string')
      .map((e) => String(e.attributes.containerId)),
  );
  for (const c of await d.listContainers({ all: true, filters: { label: mine } }).catch(() => [])) {
    // (a helper made from an image inherits that image's lessl.id: its owner is lessl.helper)
    const helperOf = c.Labels?.[LABEL.helper];
    const name = c.Names[0] ?? c.Id;
    if (helperOf !== undefined) {
      if (when === 'open' || !registry.hasIntent(helperOf)) await removed('container', c.Id, name);
    } else if (when === 'open' && !held.has(c.Id)) {
      // an executor's old container, or a warm container no task took (or one whose task's record is gone)
      await removed('container', c.Id, name);
    }
  }
  for (const v of (await d.listVolumes({ filters: { label: mine } }).catch(() => ({ Volumes: [] }))).Volumes ?? []) {
    if (!owned(v.Labels?.[LABEL.id])) await removed('volume', v.Name, v.Name);
  }
  // a committed child's layers carry its parent's labels: an image whose owner is known stays
  for (const i of await d.listImages({ filters: { label: mine } }).catch(() => [])) {
    if (!owned(i.Labels?.[LABEL.id])) await removed('image', i.Id, imageLabel(i));
  }
};

/** Delays of the sweeps after open that catch objects Docker finished after recovery ran. */
const LATE_SWEEPS_MS = [1000, 3000, 10_000];

/**
 * Late sweeps: an import or commit handed to Docker just before a crash can finish after the
 * next open's recovery ran (Docker goes on without its client). So orphans are swept again a few
 * times after open, and soon after Docker reports a labelled image or volume no element owns.
 * What they remove is added to `report.orphansRemoved`.
 */
export const sweeper = (engine: Engine, registry: Registry, report: ReconcileReport): { kick(): void; stop(): Promise<void> } => {
  let stopped = false;
  let running = Promise.resolve();
  const timers = new Set<NodeJS.Timeout>();
  const sweepSoon = (ms: number): void => {
    if (stopped) return;
    const t = setTimeout(() => {
      timers.delete(t);
      running = running.then(() => (stopped ? undefined : sweepOrphans(engine, registry, report, 'late'))).catch(() => undefined);
    }, ms);
    t.unref();
    timers.add(t);
  };
  for (const ms of LATE_SWEEPS_MS) sweepSoon(ms);
  return {
    kick: () => {
      if (timers.size < LATE_SWEEPS_MS.length + 1) sweepSoon(500);
    },
    async stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      await running;
    },
  };
};

/**
 * Removes every Docker object labelled with a registry instance: containers, then images
 * (children before parents), then volumes. For throw-away registries (tests, examples).
 */
export const purge = async (docker: import('dockerode'), instance: string): Promise<number> => {
  const f = { label: [`${LABEL.registry}=${instance}`] };
  let n = 0;
  for (const c of await docker.listContainers({ all: true, filters: f }).catch(() => [])) {
    await docker
      .getContainer(c.Id)
      .remove({ force: true })
      .then(
        () => n++,
        () => undefined,
      );
  }
  for (let pass = 0; pass < 4; pass++) {
    const imgs = await docker.listImages({ filters: f }).catch(() => []);
    if (imgs.length === 0) break;
    for (const i of imgs)
      await docker
        .getImage(i.Id)
        .remove({ force: true })
        .then(
          () => n++,
          () => undefined,
        );
  }
  for (const v of (await docker.listVolumes({ filters: f }).catch(() => ({ Volumes: [] }))).Volumes ?? []) {
    await docker
      .getVolume(v.Name)
      .remove({ force: true })
      .then(
        () => n++,
        () => undefined,
      );
  }
  return n;
};
