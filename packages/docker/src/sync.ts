/**
 * Keeping the registry true to Docker:
 * - the watcher maps Docker's own event stream in: a container, volume or image removed behind
 *   lessl's back makes its element `deleted` (detail `reason`). Changes lessl made itself are not
 *   repeated. (A task's end is reported by the follower that reads its output, not by the watcher.)
 * - reconciliation on open applies the same rule to what vanished while no backend watched, and
 *   removes lessl-labelled objects of this registry that no record knows (made by a create that
 *   crashed before its record was written) and leftover helper containers. It reports all of it.
 *   Tasks that were running are found again before this (see `resume` in executor.ts).
 * Records change only through the record door (`forget`).
 */
import type Docker from 'dockerode';
import { logError, type Element } from '@lessl/core';
import type { RecordDoor, RegistryReads } from '@lessl/kit';
import { dockerClients, type EngineEvent } from './client/index.js';
import { statusOf } from './errors.js';
import { imageLabel, type Host } from './host.js';
import { readLabels } from './labels.js';
import { containerIdOf, imageIdOf, volumeNameOf } from './attributes.js';

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

const findBy = (registry: RegistryReads, kind: string, attr: string, value: string): Element | undefined =>
  registry.scan(`${kind}://`, 1, (e) => e.attributes[attr] === value)[0];

/** What the watcher tells its owner. */
export interface WatchHooks {
  /** The engine answers again after the event stream broke. */
  readonly reconnected?: () => void;
  /** Docker reports an image of this registry that no element or create in progress owns. */
  readonly unowned?: () => void;
}

/** Whether an element lives on the engine at hand (with several hosts, each watches its own). */
export type Owns = (el: Element) => boolean;

/** An element (its key) or a create in progress owns the object. */
const ownedBy = (door: RegistryReads, key: string | undefined): boolean =>
  key !== undefined && (door.get(key) !== undefined || door.hasIntent(key));

/** What one Docker event means for the registry (see the module comment). */
const eventHandler =
  (host: Host, door: RecordDoor, hooks: WatchHooks, owns: Owns) =>
  async (ev: EngineEvent): Promise<void> => {
    const id = ev.Actor?.ID ?? ev.id ?? '';
    const l = readLabels(ev.Actor?.Attributes);
    if (ev.Type === 'container') {
      if (l.registry !== host.instance || l.helperOf !== undefined || l.owner === undefined) return;
      if (ev.Action !== 'destroy' || host.expected.delete(id)) return;
      const el = door.get(l.owner);
      if (el !== undefined && containerIdOf(el) === id) await door.forget(el.id.key, 'container removed outside lessl');
    } else if (ev.Type === 'volume' && ev.Action === 'destroy') {
      if (host.expected.delete(id)) return;
      const el = findBy(door, 'volume', 'volumeName', id);
      if (el !== undefined && owns(el)) await door.forget(el.id.key, 'volume removed outside lessl');
    } else if (ev.Type === 'image' && ev.Action !== 'delete') {
      if (l.registry === host.instance && !ownedBy(door, l.owner)) hooks.unowned?.();
    } else if (ev.Type === 'image' && ev.Action === 'delete') {
      host.images.delete(id);
      if (host.expected.delete(id)) return;
      const el = findBy(door, 'image', 'imageId', id);
      // a copy on another host going away is not the image going away
      if (el !== undefined && owns(el)) await door.forget(el.id.key, 'image removed outside lessl');
    }
  };

/** A Docker event from one line of the event stream (undefined for what does not parse as one). */
const parseEvent = (line: string): (EngineEvent & { time?: number }) | undefined => {
  const v: unknown = JSON.parse(line);
  if (typeof v !== 'object' || v === null) return undefined;
  const time: unknown = Reflect.get(v, 'time');
  return { ...v, ...(typeof time === 'number' ? { time } : {}) };
};

/** Lets the event stream's socket not keep the embedding process alive (a background watcher). */
const unref = (s: unknown): void => {
  const socket: unknown = typeof s === 'object' && s !== null ? Reflect.get(s, 'socket') : undefined;
  const f: unknown = typeof socket === 'object' && socket !== null ? Reflect.get(socket, 'unref') : undefined;
  if (typeof f === 'function') Reflect.apply(f, socket, []);
};

/** Reads an event stream to its end, handing each event on (in order) and keeping the last event time in `state.since`. */
const readEvents = async (
  s: AsyncIterable<Buffer | string>,
  state: WatchState,
  onEvent: (ev: EngineEvent) => void,
): Promise<void> => {
  let rest = '';
  for await (const chunk of s) {
    rest += chunk.toString();
    const lines = rest.split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      const ev = parseEvent(line);
      if (ev === undefined) continue;
      if (typeof ev.time === 'number') state.since = ev.time;
      onEvent(ev);
    }
  }
};

/** Watches Docker events until stopped; reconnects with backoff when the engine goes away. */
export const watch = (
  host: Host,
  door: RecordDoor,
  hooks: WatchHooks = {},
  owns: Owns = () => true,
): { stop(): Promise<void> } => {
  const state: WatchState = { stopped: false, since: Math.floor(Date.now() / 1000), current: undefined };
  let queue = Promise.resolve();
  const handle = eventHandler(host, door, hooks, owns);
  const enqueue = (ev: EngineEvent): void => {
    queue = queue.then(() => handle(ev)).catch(() => undefined);
  };
  const running = watchLoop(host, state, hooks, enqueue);
  return {
    async stop() {
      state.stopped = true;
      state.current?.destroy();
      await running;
      await queue;
    },
  };
};

/** The watcher's state its loop and `stop` share. */
interface WatchState {
  stopped: boolean;
  /** Where the stream resumes (seconds: the last event's time). */
  since: number;
  current: { destroy(): void } | undefined;
}

/** Follows the event stream; when it breaks, waits (backoff up to 5 s) and opens it again. */
const watchLoop = async (host: Host, state: WatchState, hooks: WatchHooks, onEvent: (ev: EngineEvent) => void): Promise<void> => {
  let backoff = 250;
  let broke = false;
  while (!state.stopped) {
    let lost = 'the event stream ended';
    try {
      const s = await host.clients.system.events({ since: state.since, filters: { type: ['container', 'volume', 'image'] } });
      unref(s);
      if (!isReadable(s)) throw new Error('the event stream is not readable');
      state.current = s;
      if (state.stopped) {
        s.destroy();
        break;
      }
      if (backoff > 250 || broke) {
        host.logger.info({}, 'Docker engine reachable again: event watch resumed');
        hooks.reconnected?.();
      }
      backoff = 250;
      broke = false;
      await readEvents(s, state, onEvent);
    } catch (err) {
      /* engine gone: retry */
      lost = logError(err);
    }
    if (!broke && !state.stopped) host.logger.warn({ err: lost }, 'Docker engine unavailable: event watch lost; retrying');
    broke = true;
    if (state.stopped) break;
    await new Promise((r) => setTimeout(r, backoff).unref());
    backoff = Math.min(backoff * 2, 5000);
  }
};

/** A stream that can be read and destroyed (what dockerode answers for the event stream). */
const isReadable = (s: unknown): s is AsyncIterable<Buffer | string> & { destroy(): void } =>
  typeof s === 'object' && s !== null && Symbol.asyncIterator in s && 'destroy' in s && typeof s.destroy === 'function';

/** Whether a Docker call answers 404 (the object is gone). */
const gone = async (fn: () => Promise<unknown>): Promise<boolean> => {
  try {
    await fn();
    return false;
  } catch (err) {
    return statusOf(err) === 404;
  }
};

/** Reconciles the registry with Docker (see the module comment). `recovered` is what intent recovery removed. */
export const reconcile = async (
  host: Host,
  door: RecordDoor,
  recovered: string[] = [],
  report: ReconcileReport = { recovered, vanished: [], orphansRemoved: [] },
  owns: Owns = () => true,
): Promise<ReconcileReport> => {
  const { images, volumes } = host.clients;
  for (const i of await images.listOwned().catch(() => [])) host.images.add(i.Id);
  for (const el of door.all()) {
    if (!owns(el)) continue;
    if (el.id.kind === 'image' && (await gone(() => images.inspect(imageIdOf(el))))) {
      await door.forget(el.id.key, 'image vanished from Docker');
      report.vanished.push(el.id.key);
    } else if (el.id.kind === 'volume' && (await gone(() => volumes.inspect(volumeNameOf(el))))) {
      await door.forget(el.id.key, 'volume vanished from Docker');
      report.vanished.push(el.id.key);
    }
  }
  await sweepOrphans(host, door, report, 'open');
  host.logger.info(
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
const sweepOrphans = async (host: Host, door: RegistryReads, report: ReconcileReport, when: 'open' | 'late'): Promise<void> => {
  const { containers, images, volumes } = host.clients;
  // reported before the call: once asked, the removal happens (the janitor retries what fails)
  const removed = async (kind: 'container' | 'image' | 'volume', ref: string, name: string): Promise<void> => {
    report.orphansRemoved.push(`${kind} ${name}`);
    await host.removeObject(kind, ref);
  };
  /** The containers executor records hold (a warm container an executor took has no lessl.id). */
  const held = new Set(
    door.scan('executor://', Number.MAX_SAFE_INTEGER, (e) => containerIdOf(e) !== undefined).map((e) => containerIdOf(e) ?? ''),
  );
  for (const c of await containers.listOwned().catch(() => [])) {
    // (a helper made from an image inherits that image's lessl.id: its owner is lessl.helper. An
    // image committed from a helper has lessl.helper blanked (`notAHelper`); the lessl.task and
    // lessl.pool check below is only for images committed before that, already on engines, whose
    // executor and pool containers inherit the helper's lessl.helper)
    const view = readLabels(c.Labels);
    const helperOf = view.task === undefined && view.pool === undefined ? view.helperOf : undefined;
    const name = c.Names[0] ?? c.Id;
    if (helperOf !== undefined) {
      if (when === 'open' || !door.hasIntent(helperOf)) await removed('container', c.Id, name);
    } else if (when === 'open' && !held.has(c.Id)) {
      // an executor's old container, or a warm container no task took (or one whose task's record is gone)
      await removed('container', c.Id, name);
    }
  }
  for (const v of await volumes.listOwned().catch(() => []))
    if (!ownedBy(door, readLabels(v.Labels).owner)) await removed('volume', v.Name, v.Name);
  // a committed child's layers carry its parent's labels: an image whose owner is known stays
  for (const i of await images.listOwned().catch(() => []))
    if (!ownedBy(door, readLabels(i.Labels).owner)) await removed('image', i.Id, imageLabel(i));
};

/** Delays of the sweeps after open that catch objects Docker finished after recovery ran. */
const LATE_SWEEPS_MS = [1000, 3000, 10_000];

/**
 * Late sweeps: an import or commit handed to Docker just before a crash can finish after the
 * next open's recovery ran (Docker goes on without its client). So orphans are swept again a few
 * times after open, and soon after Docker reports a labelled image or volume no element owns.
 * What they remove is added to `report.orphansRemoved`.
 */
export const sweeper = (host: Host, door: RecordDoor, report: ReconcileReport): { kick(): void; stop(): Promise<void> } => {
  let stopped = false;
  let running = Promise.resolve();
  const timers = new Set<NodeJS.Timeout>();
  const sweepSoon = (ms: number): void => {
    if (stopped) return;
    const t = setTimeout(() => {
      timers.delete(t);
      running = running.then(() => (stopped ? undefined : sweepOrphans(host, door, report, 'late'))).catch(() => undefined);
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
export const purge = async (docker: Docker, instance: string): Promise<number> => {
  const { containers, images, volumes } = dockerClients(docker, instance);
  return (await containers.removeOwned()) + (await images.removeOwned()) + (await volumes.removeOwned());
};
