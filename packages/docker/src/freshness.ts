/**
 * Image freshness: when each image last served a task (`attributes.lastUsed`, an ISO time,
 * written in the background without moving the revision), and `purge`, which removes the least
 * recently used images that nothing uses.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { invalidEntry, keyPrefix, type AnyError, type CallContext, type Element, type ElementStore } from '@lessl/core';
import { recordDoor, type RegistryPort } from '@lessl/kit';
import { imageAttributes } from './attributes.js';
import type { Host } from './host.js';
import { statusOf } from './errors.js';

/** What `purge` takes. */
export interface PurgeOptions {
  /** Remove images not used for this long (by `lastUsed`, else their creation). */
  readonly unusedForMs?: number;
  /** Then remove the least recently used until the images left take at most this many bytes. */
  readonly keepBytes?: number;
  /** Only say what would be removed. */
  readonly dryRun?: boolean;
}

/** What `purge` did. */
export interface PurgeReport {
  /** Image elements removed (or that would be, with `dryRun`), least recently used first. */
  readonly removed: readonly string[];
  /** Their sizes summed (layers shared with other images are counted in each). */
  readonly freedBytes: number;
  /** Candidates kept because something uses them (children, executors, containers), with why. */
  readonly inUse: readonly { readonly id: string; readonly why: string }[];
}

/**
 * Writes the recorded last uses into the image records (no event: the revision does not move).
 * Never waits for a lock: an image a commit holds (its engine may be slow or frozen) keeps its
 * last use for the next flush, so commits of that image on other hosts never queue behind this.
 */
export const flushLastUse = async (engine: Host, registry: RegistryPort): Promise<void> => {
  const door = recordDoor(registry);
  const used = [...engine.lastUse];
  engine.lastUse.clear();
  for (const [key, at] of used) {
    const lastUsed = new Date(at).toISOString();
    const done = await door
      .hold(
        key,
        async (el, write) => {
          if (el !== undefined) await write({ ...el.attributes, lastUsed });
          return true;
        },
        { wait: false },
      )
      .catch(() => true);
    if (done === undefined && (engine.lastUse.get(key) ?? 0) < at) engine.lastUse.set(key, at);
  }
};

/** The Docker images an element had before refreshes, still to remove (`attributes.stale`). */
export const staleOf = (el: Element): readonly string[] => imageAttributes(el).stale;

/**
 * The attributes of `current` with its stale list rewritten: the images `before` named that
 * were not `kept` leave it (images added since stay). No event: the element's content did not
 * change, only what lessl still has to clean up.
 */
export const keepStale =
  (before: readonly string[], kept: readonly string[]) =>
  (current: Element): Readonly<Record<string, unknown>> => {
    const still = staleOf(current).filter((x) => kept.includes(x) || !before.includes(x));
    const { stale: _old, ...attributes } = current.attributes;
    return still.length === 0 ? attributes : { ...attributes, stale: still };
  };

/**
 * Removes Docker images an element left behind when a refresh moved it to new content (by image
 * ID, never forced: an image a container still uses stays). An image that still has tags is
 * another's (an element with the same content) and is only forgotten. With `final` (the element
 * is deleted) an image still in use is handed to the janitor, which removes it once it can.
 * Answers the IDs still kept.
 */
export const removeStale = async (engine: Host, ids: readonly string[], final: boolean): Promise<string[]> => {
  const kept: string[] = [];
  for (const id of ids) {
    const images = engine.clients.images;
    const info = await images.inspect(id).catch((err: unknown) => (statusOf(err) === 404 ? null : undefined));
    if (info === null) continue; // gone
    if (info === undefined) {
      kept.push(id); // the engine did not answer: try again later
      continue;
    }
    if ((info.RepoTags ?? []).some((t) => t !== '<none>:<none>')) continue;
    engine.expected.add(info.Id);
    const gone = await images.remove(id, { noprune: false }).then(
      () => true,
      (err: unknown) => statusOf(err) === 404,
    );
    if (gone) continue;
    if (final) await engine.removeObject('image', info.Id);
    else kept.push(id);
  }
  return kept;
};

/** Retries every image element's stale images (purge does this first); records what is still kept. */
export const pruneStale = async (engine: Host, registry: RegistryPort): Promise<void> => {
  const door = recordDoor(registry);
  for (const el of door.scan(keyPrefix('image'), Number.MAX_SAFE_INTEGER, (e) => staleOf(e).length > 0)) {
    const before = staleOf(el);
    const kept = await removeStale(engine, before, false);
    if (kept.length === before.length) continue;
    await door.amend(el.id.key, keepStale(before, kept)).catch(() => undefined);
  }
};

/** When an image last served a task, or was made. */
export const lastUsedOf = (el: Element): number => {
  const t = Date.parse(imageAttributes(el).lastUsed ?? el.created);
  return Number.isNaN(t) ? 0 : t;
};

const nonNegative = (n: unknown): boolean => n === undefined || (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0);

/**
 * Removes least recently used images through the store (each removal is a `deleted` event and
 * is authorized as any delete): first those unused for `unusedForMs`, then, oldest first, until
 * at most `keepBytes` remain. Images something uses (InUse) are kept and listed.
 */
export const purge =
  (engine: Host, registry: RegistryPort, images: ElementStore) =>
  (opts: PurgeOptions = {}, ctx?: CallContext): TaskEither<AnyError, PurgeReport> =>
  async () => {
    if (typeof opts !== 'object' || opts === null)
      return E.left(invalidEntry('purge options must be an object', '', ['options']));
    if (!nonNegative(opts.unusedForMs))
      return E.left(invalidEntry('unusedForMs must be a non-negative integer', '', ['unusedForMs']));
    if (!nonNegative(opts.keepBytes)) return E.left(invalidEntry('keepBytes must be a non-negative integer', '', ['keepBytes']));
    await flushLastUse(engine, registry);
    if (opts.dryRun !== true) await pruneStale(engine, registry);
    const all = recordDoor(registry)
      .scan(keyPrefix('image'))
      .sort((a, b) => lastUsedOf(a) - lastUsedOf(b));
    const size = (e: Element): number => imageAttributes(e).size ?? 0;
    let total = all.reduce((a, e) => a + size(e), 0);
    const now = Date.now();
    const removed: string[] = [];
    const inUse: { id: string; why: string }[] = [];
    let freed = 0;
    for (const el of all) {
      const stale = opts.unusedForMs !== undefined && now - lastUsedOf(el) >= opts.unusedForMs;
      const over = opts.keepBytes !== undefined && total > opts.keepBytes;
      if (!stale && !over) continue;
      if (opts.dryRun !== true) {
        const r = await images.delete(el.id, ctx)();
        if (E.isLeft(r)) {
          inUse.push({ id: el.id.key, why: r.left.message });
          continue;
        }
      }
      removed.push(el.id.key);
      freed += size(el);
      total -= size(el);
    }
    return E.right({ removed, freedBytes: freed, inUse });
  };
